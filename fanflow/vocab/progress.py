"""A task's progress while it runs: how far it is (``done`` of ``total``, in some ``unit``),
its latest metrics and message, and a bounded history of metric points for charts.

A step reports through ``fanflow.progress`` and ``fanflow.log``; what crosses from a worker to
the engine is a *report*, a plain dict holding the latest values and the metric points made
since the last report::

    {"at": 1717.2, "done": 3, "total": 8, "unit": "epochs", "metrics": {"loss": 0.21},
     "message": "...", "points": [[1717.1, 3, {"loss": 0.21}]]}

(only what was set is present). The engine folds the reports of a task attempt into one
``Progress``; the run store keeps the latest ``Progress`` of each task.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_POINTS = 512  # metric points kept per task attempt; beyond, the history is thinned evenly


class Point(NamedTuple):
    """One report's metrics: when (seconds since the epoch), how far the task was, the values."""

    time: float
    done: float | None
    metrics: dict[str, float | None]


def thin(points: list, limit: int) -> list:
    """``points`` when they fit in ``limit``; else every other one (the last always kept), as
    often as needed: a history that stays evenly spread over the whole attempt."""
    while len(points) > limit:
        last = points[-1]
        points = points[::2]
        if points[-1] is not last:
            points[-1] = last
    return points


@dataclass(slots=True)
class Progress:
    """The latest of a task attempt's reports. ``metrics`` and ``history`` are replaced, never
    changed in place, so a reader on another thread always sees a whole value."""

    attempt: int
    done: float | None = None
    total: float | None = None
    unit: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    message: str | None = None
    updated: float | None = None  # when the latest report was made
    history: list[Point] = field(default_factory=list)

    @property
    def fraction(self) -> float | None:
        """``done / total`` between 0 and 1, or None when there is no total."""
        if self.done is None or not self.total or self.total <= 0:
            return None
        return min(max(self.done / self.total, 0.0), 1.0)

    def series(self, metric: str) -> list[tuple[float | None, float | None]]:
        """One metric's history as ``(done, value)`` pairs, oldest first (for a chart)."""
        return [(p.done, p.metrics[metric]) for p in self.history if metric in p.metrics]

    def merge(self, report: dict[str, Any]) -> None:
        """Fold a report (see the module's docstring) into this progress."""
        for name in ("done", "total", "unit", "message"):
            if name in report:
                setattr(self, name, report[name])
        if report.get("metrics"):
            self.metrics = {**self.metrics, **report["metrics"]}
        if report.get("points"):
            self.history = thin(self.history + [Point(*p) for p in report["points"]], MAX_POINTS)
        self.updated = report.get("at", self.updated)

    # -- as the run store keeps it ------------------------------------------------------
    def columns(self) -> dict[str, Any]:
        """Column values for the run store (JSON text for the metrics and the history)."""
        return {
            "attempt": self.attempt,
            "done": _finite(self.done),
            "total": _finite(self.total),
            "unit": self.unit,
            "metrics": _json(self.metrics),
            "message": self.message,
            "history": _json([[p.time, _finite(p.done), p.metrics] for p in self.history]),
            "updated": self.updated,
        }

    @classmethod
    def from_columns(cls, row: Any) -> Progress:
        history = [Point(t, done, metrics) for t, done, metrics in json.loads(row["history"] or "[]")]
        return cls(row["attempt"], row["done"], row["total"], row["unit"], json.loads(row["metrics"] or "{}"),
                   row["message"], row["updated"], history)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON): the latest values, the fraction and the history."""
        return {
            "attempt": self.attempt, "done": self.done, "total": self.total, "unit": self.unit,
            "fraction": self.fraction, "metrics": self.metrics, "message": self.message,
            "updated": self.updated,
            "history": [{"time": p.time, "done": p.done, "metrics": p.metrics} for p in self.history],
        }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _json(value: Any) -> str:
    """Strict JSON (a NaN or an infinity, say a diverged loss, is stored as null)."""
    return json.dumps(_finite_values(value), separators=(",", ":"), allow_nan=False)


def _finite_values(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {k: _finite_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_values(v) for v in value]
    return value


# -- as people read it ----------------------------------------------------------------------
def number(value: float | None) -> str:
    """A number as people read it: whole numbers whole, others to three significant digits."""
    if value is None:
        return "-"
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def count_text(progress: Progress, done: float | None = None) -> str | None:
    """``5/12 epochs`` (or ``5 epochs`` with no total), or None with nothing counted; with
    ``done``, as if that much were done."""
    done = progress.done if done is None else done
    if done is None:
        return None
    count = number(done) + (f"/{number(progress.total)}" if progress.total is not None else "")
    return f"{count} {progress.unit}" if progress.unit else count


def metrics_text(progress: Progress, most: int | None = None) -> str:
    """The latest metrics (the ``most`` first), in the order the step first gave them:
    ``loss 0.213 val 0.931``."""
    shown = list(progress.metrics.items())[:most]
    return " ".join(f"{name} {number(value)}" for name, value in shown)


def progress_text(progress: Progress) -> str:
    """The latest metrics (``loss 0.213 val 0.931``), then the latest message."""
    said = metrics_text(progress)
    if progress.message:
        said += ("  " if said else "") + " ".join(progress.message.split())
    return said


def summary(progress: Progress) -> str:
    """``5/12 epochs  loss 0.213 val 0.931``: the count, then the metrics and message."""
    return "  ".join(part for part in (count_text(progress), progress_text(progress)) if part)

