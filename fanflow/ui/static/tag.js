// The tagging page: send a held-out clip or an uploaded video to the gateway (through the
// UI) and show the answer, rendered by the server; wait for a gateway that is starting.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const dataEl = document.getElementById("tag-data");
  const box = document.getElementById("gateway-box");
  if (box && box.dataset.starting) {
    const poll = async () => {
      const status = await (await fetch(`/tag/gateway?run=${encodeURIComponent(box.dataset.run)}`)).json();
      if (status.url) { location.reload(); return; }
      if (status.failed) { box.insertAdjacentHTML("beforeend", '<pre class="error"></pre>'); box.lastElementChild.textContent = status.log; return; }
      setTimeout(poll, 1000);
    };
    poll();
  }
  if (!dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const answer = document.getElementById("answer");

  async function ask(form) {
    form.append("run", data.run);
    form.append("gateway", data.gateway || "");
    answer.innerHTML = '<p><span class="spinner"></span> asking the gateway…</p>';
    const result = await fanflow.post("/tag", form);
    answer.innerHTML = result.text;
  }

  for (const button of document.querySelectorAll("button.clip")) {
    button.addEventListener("click", () => {
      for (const other of document.querySelectorAll("button.clip.chosen")) other.classList.remove("chosen");
      button.classList.add("chosen");
      const form = new FormData();
      form.append("clip", button.dataset.clip);
      ask(form);
    });
  }
  const upload = document.getElementById("upload-form");
  upload.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = upload.querySelector("input[type=file]").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("video", file);
    ask(form);
  });
});
