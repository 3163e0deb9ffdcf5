// The runs list: rows that change arrive from the server already rendered (and escaped).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("runs");
  if (!table) return;
  const body = table.tBodies[0];
  const source = new EventSource(table.dataset.stream);
  source.onmessage = (event) => {
    const message = JSON.parse(event.data);
    for (const row of message.rows || []) {
      const template = document.createElement("template");
      template.innerHTML = row.html.trim();
      const fresh = template.content.firstElementChild;
      const old = document.getElementById("run-" + row.id);
      if (old) {
        fresh.querySelector("input").checked = old.querySelector("input").checked;
        old.replaceWith(fresh);
      } else {
        const empty = body.querySelector("tr.empty");
        if (empty) empty.remove();
        body.prepend(fresh);
      }
      fresh.classList.add("flash");
    }
  };
});
