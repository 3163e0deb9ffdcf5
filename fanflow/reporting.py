"""What a running step tells while it runs: how far it is and its latest metrics
(``fanflow.progress``), and lines worth reading (``fanflow.log``).

    import fanflow

    for epoch in range(1, epochs + 1):
        loss = train_one_epoch()
        fanflow.progress(epoch, epochs, unit="epochs", loss=loss, val=validate())
    fanflow.log("model saved", path=str(path))

The live view shows the latest values as a bar with the metrics beside it, the run store keeps
them (with a bounded history of the metrics, for charts), and ``fanflow show`` and the ``Run``
object read them back.

Both calls work on every executor and cost about a microsecond: a task's latest values are
kept, and sent to the engine through the executor's own channel at most every ``INTERVAL``
seconds (what comes in between is coalesced; a short task's values go with its result), so a
step may call ``progress`` in its innermost loop. Where no engine listens (a Kubernetes pod),
each report is a line on stderr. Outside a task, ``progress`` checks its arguments and does
nothing, and ``log`` prints its line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import numbers
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from fanflow.vocab.progress import MAX_POINTS, thin

__all__ = ["INTERVAL", "Reporter", "Send", "begin", "end", "log", "progress"]

INTERVAL = 0.25  # seconds between two reports of a task to the engine
MESSAGE_LIMIT = 1000  # characters of a log message kept as the task's latest message

Send = Callable[[str, int, dict], None]  # (task, attempt, report): hands a report to the engine


def progress(done: float | None = None, total: float | None = None, *, unit: str | None = None,
             **metrics: float) -> None:
    """Report how far the running task is (``done`` of ``total`` ``unit``, e.g. 3 of 8
    "epochs") and its latest metrics (``loss=0.21, val=0.93``: numbers, each one's newest value
    kept). Every argument may be left out: ``progress(loss=0.3)`` reports a metric alone.

    ``done`` and ``total`` are finite numbers, at least 0, ``done`` at most ``total``; a metric
    is any real number (NumPy scalars and one-element tensors too; a NaN is kept as missing).
    Anything else raises a ``TypeError`` (not a number) or ``ValueError`` (out of range)."""
    values: dict[str, Any] = {}
    if done is not None:
        values["done"] = _count(done, "done")
    if total is not None:
        values["total"] = _count(total, "total")
        if done is not None and values["done"] > values["total"]:
            raise ValueError(f"fanflow.progress: done ({done}) is more than total ({total})")
    if unit is not None:
        if not isinstance(unit, str) or not unit.strip():
            raise TypeError(f"fanflow.progress: unit must be a word such as 'epochs', got {unit!r:.40}")
        values["unit"] = unit
    for name, value in metrics.items():  # a dict of this call's own: made plain in place
        if type(value) is not float and type(value) is not int:
            metrics[name] = _number(value, name)
    reporter = _reporter.get() or _process_reporter
    if reporter is not None:
        reporter.update(values, metrics)


def log(message: object, **fields: object) -> None:
    """Write a line to the running task's log (stderr, stamped with the time), and make it the
    task's latest message, which the live view shows while the task runs. A task on a thread
    of the engine's own process (``executor: thread``) has no log file of its own: its line is
    kept as its latest message only, so that it never lands in the engine's terminal."""
    text = str(message)
    if fields:
        text += " " + " ".join(f"{name}={_shown(value)}" for name, value in fields.items())
    shared = _reporter.get()
    if shared is None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)
    reporter = shared or _process_reporter
    if reporter is not None:
        reporter.update({"message": text[:MESSAGE_LIMIT]}, None)


def _number(value: object, name: str) -> float | int:
    if type(value) is int or type(value) is float:
        return value
    if not isinstance(value, bool | str | bytes):
        if isinstance(value, numbers.Integral):
            return int(value)
        with contextlib.suppress(TypeError, ValueError):
            return float(value)  # NumPy scalars, 0-d arrays and one-element tensors
    raise TypeError(f"fanflow.progress: {name} must be a number, got {type(value).__name__} {value!r:.40}")


def _count(value: object, name: str) -> float | int:
    number = _number(value, name)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"fanflow.progress: {name} must be a finite number of at least 0, got {value!r:.40}")
    return number


def _shown(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Reporter:
    """One task attempt's reports: the latest values, and the metric points made since the
    last report. A report goes out when the step reports and ``INTERVAL`` has passed since the
    last one (or since the attempt began); otherwise the values wait, and a background thread
    sends them once the interval is over, so that the engine never sees stale values for long.
    What is left at the end goes with the task's result (``final``).

    Of the calls with metrics, every ``stride``-th becomes a point of the history; the stride
    doubles whenever the attempt's points pass ``MAX_POINTS``, so that the history stays evenly
    spread however often the step reports (the engine thins what it keeps the same way)."""

    __slots__ = ("_calls", "_closed", "_held", "_kept", "_last", "_lock", "_next", "_points", "_send", "_state",
                 "_stride", "attempt", "dirty", "task")

    def __init__(self, task: str, attempt: int, send: Send):
        self.task, self.attempt, self._send = task, attempt, send
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}  # latest done, total, unit, message, metrics
        self._points: list[list] = []  # not sent yet
        self._calls = self._kept = 0  # calls with metrics, and points made of them
        self._stride = 1
        self._last: dict | None = None  # the latest call's metrics, if they made no point
        self.dirty = False  # values not sent yet
        self._next = time.monotonic() + INTERVAL  # no report before this
        self._held = False  # waiting for the background thread
        self._closed = False

    def update(self, values: dict[str, Any], metrics: dict[str, float] | None) -> None:
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            state = self._state
            state.update(values)
            if metrics:
                state.setdefault("metrics", {}).update(metrics)
                if self._calls % self._stride:
                    self._last = metrics
                else:
                    self._point(metrics)
                self._calls += 1
            self.dirty = True
            if now >= self._next:
                self._flush(now)
            elif not self._held:
                self._held = True
                _flusher.hold(self)

    def _point(self, metrics: dict[str, float]) -> None:
        self._points.append([time.time(), self._state.get("done"), metrics])
        self._last = None
        self._kept += 1
        if self._kept > MAX_POINTS:
            self._stride *= 2
            self._kept //= 2
            self._points = thin(self._points, max(1, len(self._points) // 2))

    def flush_held(self) -> None:
        with self._lock:
            self._held = False
            if self.dirty and not self._closed:
                self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        report = self._report()
        self._next = now + INTERVAL
        with contextlib.suppress(Exception):  # a lost report never fails the step
            self._send(self.task, self.attempt, report)

    def _report(self) -> dict[str, Any]:
        report = {"at": time.time(), **self._state}
        if "metrics" in report:
            report["metrics"] = dict(report["metrics"])
        if self._points:
            report["points"], self._points = self._points, []
        self.dirty = False
        return report

    def final(self) -> dict[str, Any] | None:
        """The attempt is over: no more reports. Returns the latest values and the points not
        sent yet, or None when the step reported nothing."""
        with self._lock:
            self._closed = True
            if not self._state:
                return None
            if self._last is not None:  # the history ends where the attempt did
                self._points.append([time.time(), self._state.get("done"), self._last])
            return self._report()


class _Flusher:
    """The background thread that sends values held back by the rate limit once their
    interval is over (started by the first value held back)."""

    def __init__(self):
        self._ready = threading.Condition()
        self._held: list[Reporter] = []
        self._thread: threading.Thread | None = None

    def hold(self, reporter: Reporter) -> None:
        with self._ready:
            self._held.append(reporter)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fanflow-reports", daemon=True)
                self._thread.start()
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._held:
                    self._ready.wait()
                held, self._held = self._held, []
            time.sleep(max(0.0, max(r._next for r in held) - time.monotonic()))
            for reporter in held:
                reporter.flush_held()


_flusher = _Flusher()
_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("fanflow_reporter", default=None)
_process_reporter: Reporter | None = None  # a task that has its process to itself


def begin(task: str, attempt: int, send: Send | None, *, own_process: bool = True) -> Reporter:
    """Start taking a task attempt's reports (the executor calls this). ``send`` hands them to
    the engine; None writes each as a line on stderr. A task on a thread of a shared process
    reports from that thread only; one with a process of its own, from any of its threads."""
    global _process_reporter
    reporter = Reporter(task, attempt, send or print_report)
    if own_process:
        _process_reporter = reporter
    else:
        _reporter.set(reporter)
    return reporter


def end(reporter: Reporter) -> dict[str, Any] | None:
    """Stop taking the attempt's reports; returns what goes with its result (see ``final``)."""
    global _process_reporter
    if _process_reporter is reporter:
        _process_reporter = None
    elif _reporter.get() is reporter:
        _reporter.set(None)
    return reporter.final()


def print_report(task: str, attempt: int, report: dict) -> None:
    """Where no engine listens: the report as a line of JSON on stderr (its points left out)."""
    line = {"task": task, "attempt": attempt, **{k: v for k, v in report.items() if k != "points"}}
    print("fanflow: progress " + json.dumps(line, default=str), file=sys.stderr, flush=True)
