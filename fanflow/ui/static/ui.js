// Shared by every page: the form token, durations that tick while a run is live, and the
// compare page's "only what differs" switch.
"use strict";
const fanflow = {
  token: () => document.querySelector('meta[name="csrf-token"]').content,
  took(seconds) {
    if (seconds == null) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(1)} s`;
    if (seconds < 7200) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  },
  tick() {
    const now = Date.now() / 1000;
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = fanflow.took(now - parseFloat(el.dataset.since));
    }
  },
  async post(url, body) {
    const response = await fetch(url, {method: "POST", body, headers: {"X-CSRF-Token": fanflow.token()}});
    return {ok: response.ok, status: response.status, text: await response.text()};
  },
};
setInterval(fanflow.tick, 1000);
document.addEventListener("DOMContentLoaded", () => {
  const only = document.getElementById("only-differences");
  if (only) only.addEventListener("change", () => {
    document.querySelector("table.compare").classList.toggle("only-differences", only.checked);
  });
});
