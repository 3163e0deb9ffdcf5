// A run's page: the graph's live states, the branch lists, the task panel with its logs
// followed while the task runs. Every piece of HTML comes rendered (and escaped) from the
// server; this script only moves it into place and updates states, counts and bars.
"use strict";
const run = JSON.parse(document.getElementById("run-data").textContent);
const base = `/runs/${encodeURIComponent(run.id)}`;
const SVG = "http://www.w3.org/2000/svg";
let panelTask = null;
let panelGeneration = 0;
let panelReload = null;

async function fetchHTML(url) {
  const response = await fetch(url);
  return response.ok ? response.text() : `<p class="error-box">${response.status}: could not load this</p>`;
}

// -- the task panel -----------------------------------------------------------------------
async function openTask(name, keepScroll) {
  const panel = document.getElementById("panel");
  const generation = ++panelGeneration;
  const top = panel.scrollTop;
  const html = await fetchHTML(`${base}/task?name=${encodeURIComponent(name)}`);
  if (generation !== panelGeneration) return;
  const open = new Set([...panel.querySelectorAll("details[data-attempt][open]")].map((d) => d.dataset.attempt));
  panel.innerHTML = html;
  if (keepScroll) {
    for (const d of panel.querySelectorAll("details[data-attempt]")) if (open.has(d.dataset.attempt)) d.open = true;
    panel.scrollTop = top;
  }
  panelTask = name;
  history.replaceState(null, "", `#task=${encodeURIComponent(name)}`);
  for (const node of document.querySelectorAll("#graph .node")) {
    node.classList.toggle("chosen", node.dataset.step === name.split("[")[0]);
  }
  followProgress(generation);
  for (const details of panel.querySelectorAll("details[data-attempt]")) {
    const start = () => { for (const pre of details.querySelectorAll("pre.log")) followLog(pre, generation); };
    if (details.open) start(); else details.addEventListener("toggle", start, {once: true});
  }
  const box = panel.getBoundingClientRect();
  if (!keepScroll && (box.top > innerHeight * 0.6 || box.bottom < 0)) panel.scrollIntoView({block: "start"});
}

async function followLog(pre, generation) {
  if (pre.dataset.following) return;
  pre.dataset.following = "1";
  let offset = 0;
  for (;;) {
    const response = await fetch(`${pre.dataset.log}&offset=${offset}`);
    if (!response.ok || generation !== panelGeneration) return;
    const piece = await response.json();
    if (piece.text) {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(piece.text);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
    offset = piece.offset;
    pre.classList.toggle("following", piece.more);
    if (!piece.more) return;
    await new Promise((resolve) => setTimeout(resolve, piece.text ? 100 : piece.every * 1000));
    if (generation !== panelGeneration) return;
  }
}

// A running task's progress section, reloaded (rendered by the server) while it runs.
async function followProgress(generation) {
  for (;;) {
    const section = document.getElementById("task-progress");
    if (!section || !section.dataset.live || generation !== panelGeneration) return;
    await new Promise((resolve) => setTimeout(resolve, parseFloat(section.dataset.live) * 1000));
    if (generation !== panelGeneration) return;
    const html = await fetchHTML(`${base}/progress?name=${encodeURIComponent(section.dataset.task)}`);
    if (generation !== panelGeneration) return;
    section.outerHTML = html;
  }
}

function closePanel() {
  panelGeneration++;
  panelTask = null;
  document.getElementById("panel").innerHTML = '<p class="note">Choose a step in the graph, a bar in the timeline or a failed task.</p>';
  history.replaceState(null, "", location.pathname);
}

// -- branches of a fan-out ----------------------------------------------------------------
async function loadBranches(step, state, offset) {
  const box = document.getElementById("branches");
  const query = new URLSearchParams({step, state: state || "", offset: offset || 0});
  box.innerHTML = await fetchHTML(`${base}/branches?${query}`);
}

// -- live updates -------------------------------------------------------------------------
function applySteps(steps) {
  for (const [name, status] of Object.entries(steps)) {
    const node = document.getElementById("node-" + name);
    if (!node) continue;
    node.setAttribute("class", node.getAttribute("class").replace(/\bs-[a-z]+/, "s-" + status.state));
    node.querySelector(".summary").textContent = status.summary;
    const extra = node.querySelector(".extra");
    extra.textContent = status.urls.length ? status.urls.join(" ") : (status.quorum || "");
    extra.setAttribute("class", "extra" + (status.quorum_state ? " q-" + status.quorum_state : ""));
    const bar = node.querySelector(".bar");
    for (const seg of bar.querySelectorAll(".seg")) seg.remove();
    for (const [state, x, width] of status.segments) {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "seg s-" + state);
      rect.setAttribute("x", x);
      rect.setAttribute("width", width);
      rect.setAttribute("height", 8);
      bar.append(rect);
    }
  }
}

function applyRun(state) {
  const badge = document.getElementById("run-state");
  badge.textContent = state.state;
  badge.className = "badge s-" + state.state;
  const duration = document.getElementById("run-duration");
  if (state.state !== "running") {
    delete duration.dataset.since;
    duration.textContent = fanflow.took(state.duration);
  }
  const error = document.getElementById("run-error");
  error.textContent = state.error || "";
  error.hidden = !state.error;
  const counts = document.getElementById("run-counts");
  counts.replaceChildren();
  let total = 0;
  for (const s of run.order) {
    const n = state.counts[s];
    if (!n) continue;
    total += n;
    const badge = document.createElement("span");
    badge.className = "count s-" + s;
    badge.textContent = `${n} ${s}`;
    counts.append(badge, " ");
  }
  const all = document.createElement("span");
  all.className = "total";
  all.textContent = `${total} tasks`;
  counts.append(all);
  // The run has ended: show the page as it now is (its outputs, its buttons), panel kept.
  if (state.state !== "running" && run.live) setTimeout(() => location.reload(), 800);
}

function applyTasks(tasks) {
  let panelChanged = false;
  for (const [name, , state, attempts] of tasks) {
    const row = document.getElementById("b-" + name);
    if (row) {
      row.className = "s-" + state;
      const badge = row.querySelector(".state .badge");
      badge.textContent = state;
      badge.className = "badge s-" + state;
      row.querySelector("td.num").textContent = attempts;
    }
    if (name === panelTask) panelChanged = true;
  }
  if (panelChanged && !panelReload) {
    panelReload = setTimeout(() => { panelReload = null; if (panelTask) openTask(panelTask, true); }, 300);
  }
}

function connect() {
  const source = new EventSource(run.stream);
  source.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.run) applyRun(message.run);
    if (message.steps) applySteps(message.steps);
    if (message.tasks) applyTasks(message.tasks);
    if (message.attempts && window.fanflowTimeline) window.fanflowTimeline.update(message.attempts, message.tasks || [], message.run);
  };
  source.addEventListener("end", () => source.close());
}

// -- wiring -------------------------------------------------------------------------------
document.addEventListener("click", (event) => {
  const link = event.target.closest(".task-link");
  if (link) { event.preventDefault(); openTask(link.dataset.task); return; }
  const branches = event.target.closest("[data-branches]");
  if (branches) { event.preventDefault(); loadBranches(branches.dataset.branches, branches.dataset.state, branches.dataset.offset); return; }
  const close = event.target.closest(".close");
  if (close && close.closest("#panel")) { closePanel(); return; }
  if (close && close.closest("#branches")) { document.getElementById("branches").innerHTML = ""; return; }
  const node = event.target.closest("#graph .node");
  if (node) {
    if (node.dataset.fanout === "1") loadBranches(node.dataset.step, "", 0);
    else openTask(node.dataset.step);
  }
});
document.addEventListener("keydown", (event) => {
  const node = event.target.closest && event.target.closest("#graph .node");
  if (node && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); node.dispatchEvent(new MouseEvent("click", {bubbles: true})); }
});
// The graph fills its box, shrunk at most to 60 % (then it scrolls).
function fitGraph() {
  const svg = document.getElementById("graph");
  const natural = parseFloat(svg.getAttribute("width"));
  const room = svg.parentElement.clientWidth - 2;
  svg.style.width = Math.max(Math.min(room, natural * 1.15), natural * 0.6) + "px";
}
window.addEventListener("resize", fitGraph);
fitGraph();
window.fanflowOpenTask = openTask;
if (location.hash.startsWith("#task=")) openTask(decodeURIComponent(location.hash.slice(6)));
if (run.live) connect();
