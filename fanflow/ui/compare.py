"""Two runs side by side: parameters, each step's tasks and time, and every value their
outputs hold (metrics included), with what differs highlighted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fanflow.errors import RunNotFound
from fanflow.ui.artifacts import plain
from fanflow.vocab.manifest import ARTIFACT_KEY

TASKS_COMPARED = 200  # tasks per run whose outputs are compared
MISSING = object()


@dataclass
class Row:
    key: str
    a: Any
    b: Any

    @property
    def differs(self) -> bool:
        return self.a != self.b

    @property
    def delta(self) -> str:
        numbers = (int, float)
        if isinstance(self.a, numbers) and isinstance(self.b, numbers) and not isinstance(self.a, bool) \
                and not isinstance(self.b, bool) and self.a != self.b:
            return f"{self.b - self.a:+.4g}"
        return ""


def show(value: Any) -> str:
    if value is MISSING:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def flatten(value: Any, prefix: str, into: dict[str, Any]) -> None:
    """Scalars of a value by dotted path; a stored file by its digest (equal files, equal
    digests)."""
    if isinstance(value, dict):
        if ARTIFACT_KEY in value:
            into[prefix] = f"file {value[ARTIFACT_KEY].removeprefix('sha256:')[:12]}"
            return
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else key, into)
    elif isinstance(value, list) and len(value) <= 50:
        for index, item in enumerate(value):
            flatten(item, f"{prefix}[{index}]", into)
    elif isinstance(value, list):
        into[prefix] = f"{len(value)} items"
    else:
        into[prefix] = value


def rows(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    keys = list(a) + [k for k in b if k not in a]
    return [Row(k, a.get(k, MISSING), b.get(k, MISSING)) for k in keys]


def _outputs(history, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for task in history.tasks(run_id, states=["succeeded", "serving"], limit=TASKS_COMPARED):
        if task.manifest is not None:
            flatten(plain(task.manifest), task.name, found)
    return found


def _steps(history, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for task in history.tasks(run_id):
        entry = found.setdefault(task.step, {"states": {}, "first": None, "last": None, "reused": 0})
        entry["states"][task.state] = entry["states"].get(task.state, 0) + 1
        entry["reused"] += task.cached
        if task.started:
            entry["first"] = min(entry["first"] or task.started, task.started)
        if task.ended:
            entry["last"] = max(entry["last"] or task.ended, task.ended)
    flat: dict[str, Any] = {}
    for step, entry in found.items():
        flat[f"{step} tasks"] = ", ".join(f"{n} {s}" for s, n in sorted(entry["states"].items()))
        flat[f"{step} reused"] = entry["reused"]
        if entry["first"] and entry["last"]:
            flat[f"{step} time (s)"] = round(entry["last"] - entry["first"], 2)
    return flat


def compare_page(request: Request) -> Response:
    ui = request.app.state.ui
    q = request.query_params
    chosen = q.getlist("run") or [x for x in (q.get("a"), q.get("b")) if x]
    recent = ui.history.find(limit=50)
    if len(chosen) != 2:
        return ui.templates.TemplateResponse(request, "compare.html", {"recent": recent, "a": None, "b": None})
    try:
        a, b = (ui.history.summary(run_id) for run_id in chosen)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    if q.getlist("run") and b.started < a.started:  # two runs ticked in a list: the older is A
        a, b = b, a
    sections = {
        "Parameters": rows(_flat(a.params), _flat(b.params)),
        "Steps": rows(_steps(ui.history, a.id), _steps(ui.history, b.id)),
        "Outputs and metrics": rows(_outputs(ui.history, a.id), _outputs(ui.history, b.id)),
    }
    return ui.templates.TemplateResponse(request, "compare.html", {
        "recent": recent, "a": a, "b": b, "sections": sections, "show": show,
    })


def _flat(value: dict) -> dict[str, Any]:
    found: dict[str, Any] = {}
    flatten(value, "", found)
    return found


routes = [Route("/compare", compare_page)]
