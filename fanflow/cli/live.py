"""The live view of a run: every task's state as it changes, then a summary."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fanflow.vocab.states import Event, State

STYLE = {
    "pending": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "serving": "bold green",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "magenta",
    "cancelled": "yellow",
}
SYMBOL = {
    "pending": "·",
    "running": "▶",
    "retrying": "↻",
    "serving": "●",
    "succeeded": "✓",
    "failed": "✗",
    "skipped": "⤼",
    "cancelled": "■",
}
DETAILED_UP_TO = 30  # runs with at most this many tasks show every task


@dataclass
class TaskView:
    name: str
    step: str
    state: str = "pending"
    attempt: int = 0
    started: float | None = None
    ended: float | None = None
    cached: bool = False
    note: str = ""  # error, skip or cancel reason

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


class RunView:
    """Collects the engine's events (it is a listener) and renders them."""

    def __init__(self, title: str, console: Console | None = None):
        self.title = title
        self.console = console or Console(stderr=True)
        self.tasks: dict[str, TaskView] = {}
        self.steps: dict[str, Counter] = {}
        self.started = time.time()
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __call__(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                self._apply(event)
        if self._live is None and not self.console.is_terminal:
            self._print_plain(events)

    def _apply(self, event: Event) -> None:
        view = self.tasks.get(event.task)
        counts = self.steps.setdefault(event.step, Counter())
        if view is None:
            view = self.tasks[event.task] = TaskView(event.task, event.step)
            counts["pending"] += 1
        state = event.state.value
        counts[view.state] -= 1
        counts[state] += 1
        view.state, view.attempt = state, event.attempt
        if state == "running" and (view.started is None or (event.attempt > 1 and view.ended)):
            view.started, view.ended = event.time, None
        if event.state in (State.SUCCEEDED, State.FAILED, State.SKIPPED, State.CANCELLED):
            view.ended = event.time
        view.cached = bool(event.detail.get("cached"))
        note = event.detail.get("error") or event.detail.get("reason")
        if "restart" in event.detail:
            note = f"restarted ({event.detail['restart']}): {event.detail.get('error', '')}"
        if note:
            view.note = str(note)

    # -- rendering ----------------------------------------------------------------------
    def __enter__(self) -> RunView:
        if self.console.is_terminal:
            self._live = Live(
                console=self.console, get_renderable=self.render, refresh_per_second=6, transient=True
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def render(self):
        with self._lock:
            elapsed = time.time() - self.started
            header = Text.assemble((f"{self.title}", "bold"), f"  {elapsed:5.1f}s")
            body = self._task_table() if len(self.tasks) <= DETAILED_UP_TO else self._step_table(live=True)
            return Group(header, body)

    def _task_table(self) -> Table:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("task", "state", "attempt", "time", "note"):
            table.add_column(column, overflow="fold", max_width=80 if column == "note" else None)
        for view in self.tasks.values():
            table.add_row(*self._row(view))
        return table

    def _row(self, view: TaskView) -> list:
        state = view.state + (" (cached)" if view.cached else "")
        duration = view.duration
        return [
            Text(view.name),
            Text(f"{SYMBOL.get(view.state, ' ')} {state}", style=STYLE.get(view.state, "")),
            str(view.attempt or ""),
            f"{duration:.1f}s" if duration is not None else "",
            Text(_short(view.note), style="red" if view.state == "failed" else "dim"),
        ]

    def _step_table(self, live: bool = False) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        states = ["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
        table.add_column("step")
        table.add_column("done", justify="right")
        for state in states:
            table.add_column(state, justify="right", style=STYLE[state])
        for step, counts in self.steps.items():
            total = sum(v for v in counts.values() if v > 0)
            done = sum(counts[s] for s in ("succeeded", "failed", "skipped", "cancelled", "serving"))
            table.add_row(
                step,
                f"{done}/{total}",
                *[str(counts[s] + (counts["retrying"] if s == "running" else 0) or "") for s in states],
            )
        extra = []
        if live:
            running = [v for v in self.tasks.values() if v.state in ("running", "retrying")][:8]
            extra += [Text.assemble("  ", *(_cell(c) for c in self._row(v)[:4])) for v in running]
        failed = [v for v in self.tasks.values() if v.state == "failed"][:8]
        extra += [Text(f"  ✗ {v.name}: {_short(v.note)}", style="red") for v in failed]
        return Group(table, *extra)

    def summary(self) -> Group:
        with self._lock:
            if len(self.tasks) <= DETAILED_UP_TO:
                return Group(self._task_table())
            return self._step_table()

    def _print_plain(self, events: list[Event]) -> None:
        detailed = len(self.tasks) <= DETAILED_UP_TO
        for event in events:
            state = event.state.value
            if state in ("pending", "running"):
                continue
            if detailed or state in ("failed", "retrying"):
                view = self.tasks[event.task]
                note = f": {_short(view.note)}" if view.note and state != "succeeded" else ""
                cached = " (cached)" if view.cached else ""
                self.console.print(
                    f"{SYMBOL.get(state, ' ')} {event.task} {state}{cached}{note}",
                    highlight=False,
                    markup=False,
                )


def _cell(value) -> Text:
    text = value if isinstance(value, Text) else Text(str(value))
    return Text.assemble(text, "  ")


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
