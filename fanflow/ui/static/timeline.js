// The run page's timeline: every attempt as a bar on its worker's lane, drawn on a canvas
// (a 10,000-task run stays light), retries striped, reuses from the cache as diamonds.
// Hovering shows an attempt; clicking opens its task.
"use strict";
(() => {
  const COLOURS = {succeeded: "#1a7f37", cached: "#1a7f37", running: "#0969da", failed: "#cf222e",
    cancelled: "#9a6700", serving: "#2da44e", exited: "#bf8700", retrying: "#bf8700"};
  const LANE = 18, LABEL = 150, TOP = 22;
  const canvas = document.getElementById("timeline");
  if (!canvas) return;
  const scroller = document.getElementById("timeline-scroll");
  const tip = document.getElementById("timeline-tip");
  const state = {attempts: new Map(), reused: [], services: new Set(), started: 0, ended: null, live: false, zoom: 1,
    lanes: [], bars: []};
  let pending = false;

  function key(a) { return a[0] + "#" + a[1]; }
  function end() { return state.ended || (state.live ? Date.now() / 1000 : Math.max(state.started + 1, ...[...state.attempts.values()].map((a) => a[4] || a[3] || 0))); }

  function layout() {
    const lanes = new Map();
    const sorted = [...state.attempts.values()].sort((a, b) => (a[3] || 0) - (b[3] || 0));
    for (const a of sorted) {
      if (a[5] === "cached") continue;  // reused, not run: a diamond on its own lane
      // A service runs in a process of its own: its lane is named after it.
      const lane = a[2] || (state.services.has(a[0].split("[")[0]) ? a[0] : a[4] ? "(unknown worker)" : "(running)");
      if (!lanes.has(lane)) lanes.set(lane, []);
      lanes.get(lane).push(a);
    }
    if (state.reused.length) lanes.set("reused from the cache", []);
    state.lanes = [...lanes.keys()];
    state.bars = [...lanes.values()];
  }

  function draw() {
    pending = false;
    layout();
    const span = Math.max(end() - state.started, 0.001);
    const visible = Math.max(scroller.clientWidth - 2, 300);
    const width = Math.min(Math.round((visible - LABEL) * state.zoom) + LABEL, 30000);
    const height = TOP + Math.max(state.lanes.length, 1) * LANE + 4;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio; canvas.height = height * ratio;
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const scale = (width - LABEL - 10) / span;
    state.scale = scale;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#656d76";
    const step = niceStep(span / Math.max((width - LABEL) / 90, 1));
    for (let t = 0; t <= span; t += step) {
      const x = LABEL + t * scale;
      g.fillRect(x, TOP - 4, 1, height);
      g.fillText(fanflow.took(t), x + 2, 12);
    }
    const stripes = pattern(g);
    state.lanes.forEach((lane, i) => {
      const y = TOP + i * LANE;
      g.fillStyle = i % 2 ? "#f6f8fa" : "#ffffff";
      g.fillRect(0, y, width, LANE);
      g.fillStyle = "#1f2328";
      g.fillText(lane.length > 22 ? lane.slice(0, 21) + "…" : lane, 4, y + 13);
      for (const a of state.bars[i]) {
        const x = LABEL + ((a[3] || state.started) - state.started) * scale;
        const w = Math.max(((a[4] || end()) - (a[3] || state.started)) * scale, 1.5);
        g.fillStyle = COLOURS[a[5]] || "#8c959f";
        g.fillRect(x, y + 3, w, LANE - 6);
        if (a[1] > 1) { g.fillStyle = stripes; g.fillRect(x, y + 3, w, LANE - 6); }
      }
    });
    if (state.reused.length) {
      const y = TOP + (state.lanes.length - 1) * LANE + LANE / 2;
      g.fillStyle = COLOURS.succeeded;
      for (const [, t] of state.reused) {
        const x = LABEL + (t - state.started) * scale;
        g.beginPath(); g.moveTo(x, y - 5); g.lineTo(x + 4, y); g.lineTo(x, y + 5); g.lineTo(x - 4, y); g.fill();
      }
    }
  }

  function pattern(g) {
    const tile = document.createElement("canvas");
    tile.width = tile.height = 6;
    const t = tile.getContext("2d");
    t.strokeStyle = "rgba(255,255,255,0.75)"; t.lineWidth = 2;
    t.beginPath(); t.moveTo(0, 6); t.lineTo(6, 0); t.stroke();
    return g.createPattern(tile, "repeat");
  }

  function niceStep(raw) {
    const steps = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
    return steps.find((s) => s >= raw) || 7200;
  }

  function redraw() { if (!pending) { pending = true; requestAnimationFrame(draw); } }

  function at(event) {
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left, y = event.clientY - box.top;
    const lane = Math.floor((y - TOP) / LANE);
    if (lane < 0 || lane >= state.bars.length) return null;
    const t = state.started + (x - LABEL) / state.scale;
    const slack = 3 / state.scale;
    let best = null;
    for (const a of state.bars[lane]) {
      if ((a[3] || 0) - slack <= t && (a[4] || end()) + slack >= t) best = a;
    }
    if (!best && state.lanes[lane] === "reused from the cache") {
      best = state.reused.find(([, r]) => Math.abs(r - t) < 6 / state.scale);
      if (best) return {task: best[0], text: `${best[0]}\nreused from the cache`};
    }
    return best && {task: best[0], text: `${best[0]}\nattempt ${best[1]} · ${best[5]} · ${fanflow.took((best[4] || end()) - best[3])}${best[2] ? " · " + best[2] : ""}`};
  }

  canvas.addEventListener("mousemove", (event) => {
    const found = at(event);
    tip.hidden = !found;
    canvas.style.cursor = found ? "pointer" : "default";
    if (found) { tip.textContent = found.text; tip.style.left = event.clientX + 12 + "px"; tip.style.top = event.clientY + 12 + "px"; }
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (event) => { const found = at(event); if (found) window.fanflowOpenTask(found.task); });
  document.getElementById("tl-zoom-in").addEventListener("click", () => { state.zoom *= 2; redraw(); });
  document.getElementById("tl-zoom-out").addEventListener("click", () => { state.zoom = Math.max(state.zoom / 2, 1); redraw(); });
  window.addEventListener("resize", redraw);

  window.fanflowTimeline = {
    update(attempts, tasks, run) {
      for (const a of attempts) state.attempts.set(key(a), a);
      for (const t of tasks) if (t[6] && t[5] && !state.reused.some(([n]) => n === t[0])) state.reused.push([t[0], t[5]]);
      if (run) { state.ended = run.state === "running" ? null : run.ended; state.live = run.state === "running"; }
      redraw();
    },
  };

  fetch(`/runs/${encodeURIComponent(JSON.parse(document.getElementById("run-data").textContent).id)}/timeline.json`)
    .then((r) => r.json())
    .then((data) => {
      state.started = data.started; state.ended = data.ended; state.live = data.live;
      for (const a of data.attempts) if (!state.attempts.has(key(a))) state.attempts.set(key(a), a);
      state.reused = data.reused;
      state.services = new Set(data.services);
      redraw();
      if (data.live) setInterval(() => { if (state.live) redraw(); }, 1000);
    });
})();
