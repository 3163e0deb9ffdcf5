"""The live view of a run: every task's state as it changes, then a summary.

It stays cheap at any size: each event updates a few counters; only tasks worth a line of
their own (running, retrying, serving or failed, or every task of a small run) are kept with
their details. When the tasks do not fit the terminal, fanned-out steps fold into one line
each with their counts by state. Lines never wrap: a task's name or the run id is never
broken in two (so it can be copied); what does not fit is cut at the end of the line, after
the name. Names are shown as they are, never read as markup.

A running task that reports its progress (``fanflow.progress``) shows a bar and its count in
place of its state, and its latest metrics (or its latest ``fanflow.log`` message) at the end
of its line; the bar narrows (down to 3 cells) to keep the first metric whole, and what
does not fit is cut at the end of the line. A finished task keeps its final
metrics on its line.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from fanflow.vocab.progress import Progress, count_text, metrics_text, progress_text
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
DONE = frozenset({"succeeded", "failed", "skipped", "cancelled", "serving"})
ACTIVE = ("running", "retrying", "serving")
# Shown first: a short terminal shows what is going on now before what has finished.
ORDER = {"running": 0, "retrying": 1, "serving": 2, "failed": 3, "pending": 4, "cancelled": 5, "skipped": 6,
         "succeeded": 7}
DETAILED_UP_TO = 30  # runs with at most this many tasks keep every task's details
FAILED_KEPT = 50  # failed tasks of a large run whose errors are kept for the view
STATE_WIDTH = 18  # the state column; a progress bar and its count take its place
BAR_WIDTH = (3, 12)  # the narrowest and the widest bar, in cells
EIGHTHS = " ▏▎▍▌▋▊▉"


class TaskView:
    __slots__ = ("attempt", "cached", "ended", "name", "note", "progress", "seq", "started", "state", "step")

    def __init__(self, name: str, step: str, seq: int):
        self.name, self.step, self.seq = name, step, seq
        self.state = "pending"
        self.attempt = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.cached = False
        self.note = ""  # error, skip or cancel reason
        self.progress: Progress | None = None  # as the task ended

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


class RunView:
    """Collects the engine's events (it is a listener) and renders them."""

    def __init__(self, title: str, console: Console | None = None, sizes: Callable[[], dict[str, int]] | None = None):
        self.title = title
        self.console = console or Console(stderr=True)
        self.sizes = sizes  # each expanded step's number of tasks, from the engine: counts of tasks
        # whose first event has not come yet
        self.progress: Callable[[str], Progress | None] | None = None  # a running task's, from the engine
        self.states: dict[str, str] = {}  # every task's state
        self.steps: dict[str, Counter] = {}  # step -> tasks by state
        self.views: dict[str, TaskView] = {}  # tasks worth a line of their own
        self.failed_seen = 0
        self.started = time.time()
        self._lock = threading.Lock()
        self._live: Live | None = None

    @property
    def detailed(self) -> bool:
        return len(self.states) <= DETAILED_UP_TO

    def __call__(self, events: list[Event]) -> None:
        with self._lock:
            states, steps = self.states, self.steps
            counted = self.sizes is not None  # tasks with no event yet count as pending
            for event in events:
                # A large run's tasks that have not started are counted from the steps' sizes:
                # their pending events need not be applied one by one.
                if counted and event.state is State.PENDING and event.task not in states and len(
                        states) > DETAILED_UP_TO:
                    if event.step not in steps:
                        steps[event.step] = Counter()
                    continue
                self._apply(event)
        if self._live is None and not self.console.is_terminal:
            self._print_plain(events)

    def _apply(self, event: Event) -> None:
        name, state = event.task, event.state.value
        old = self.states.get(name)
        counts = self.steps.get(event.step)
        if counts is None:
            counts = self.steps[event.step] = Counter()
        if old is not None:
            counts[old] -= 1
        counts[state] += 1
        self.states[name] = state
        view = self.views.get(name)
        if view is None:
            keep = state in ACTIVE or (state == "failed" and self.failed_seen < FAILED_KEPT)
            if not (keep or self.detailed):
                return
            view = self.views[name] = TaskView(name, event.step, len(self.states))
        elif not self.detailed and state in DONE and state not in ("failed", "serving"):
            del self.views[name]  # a large run keeps no line for a task that ended well
            return
        view.state, view.attempt = state, event.attempt
        if state == "running" and (view.started is None or (event.attempt > 1 and view.ended)):
            view.started, view.ended = event.time, None
        if state in DONE and state != "serving":
            view.ended = event.time
            if self.progress is not None:
                view.progress = self.progress(name)
        view.cached = bool(event.detail.get("cached"))
        note = event.detail.get("error") or event.detail.get("reason")
        if "restart" in event.detail:
            note = f"restarted ({event.detail['restart']}): {event.detail.get('error', '')}"
        if note:
            view.note = str(note)
        if state == "failed":
            self.failed_seen += 1
        if len(self.states) == DETAILED_UP_TO + 1:  # the run just became large: drop what it need not keep
            for other in [v for v in self.views.values() if v.state in DONE and v.state not in ("failed", "serving")]:
                del self.views[other.name]

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

    def render(self) -> Group:
        """What the terminal shows now: a header with the done/total counter, then a line per
        task if they fit, else a line per step and the tasks running now, as many as fit."""
        with self._lock:
            height = max(self.console.size.height - 1, 4)  # Live keeps the last line for the cursor
            lines = [self._header()]
            lines += self._body(height - 1)
            return Group(*lines)

    def summary(self) -> Group:
        """What stays on the screen after the run: every task of a small run, else a line per
        step and the failures."""
        with self._lock:
            lines = self._task_lines(sorted(self.views.values(), key=lambda v: v.seq)) if self.detailed else (
                self._step_lines() + self._task_lines(self._failed()))
            return Group(*lines)

    def _totals(self) -> dict[str, int]:
        sizes = self.sizes() if self.sizes else {}
        return {step: max(sum(n for n in counts.values() if n > 0), sizes.get(step, 0))
                for step, counts in self.steps.items()}

    def _header(self) -> Text:
        total = sum(self._totals().values())
        done = sum(counts[s] for counts in self.steps.values() for s in DONE)
        elapsed = time.time() - self.started
        return _line(Text.assemble((self.title, "bold"), f"  {done}/{total} done  {elapsed:.1f}s"))

    def _body(self, room: int) -> list[Text]:
        views = sorted(self.views.values(), key=lambda v: (ORDER.get(v.state, 9), v.seq))
        if self.detailed and len(views) <= room:
            return self._task_lines(views)
        steps = self._step_lines()
        room -= len(steps)
        shown = [v for v in views if v.state in ACTIVE or v.state == "failed"]
        if len(shown) > room:
            more = len(shown) - max(room - 1, 0)
            shown = shown[: max(room - 1, 0)]
            return steps + self._task_lines(shown) + [Text(f"  … and {more} more", style="dim")]
        return steps + self._task_lines(shown)

    def _step_lines(self) -> list[Text]:
        width = max((len(step) for step in self.steps), default=0)
        lines = []
        totals = self._totals()
        for step, counts in self.steps.items():
            total = totals[step]
            counts = Counter(counts)
            counts["pending"] += total - sum(n for n in counts.values() if n > 0)
            done = sum(counts[s] for s in DONE)
            line = Text.assemble((step.ljust(width), "bold"), f"  {done:>{len(str(total))}}/{total}")
            for state in ("running", "retrying", "serving", "succeeded", "failed", "skipped", "cancelled",
                          "pending"):
                if counts[state] > 0:
                    line.append(f"  {SYMBOL[state]} {counts[state]} {state}", style=STYLE[state])
            lines.append(_line(line))
        return lines

    def _failed(self) -> list[TaskView]:
        return sorted((v for v in self.views.values() if v.state == "failed"), key=lambda v: v.seq)

    def _task_lines(self, views: list[TaskView]) -> list[Text]:
        width = max((len(v.name) for v in views), default=0)
        return [self._task_line(v, width) for v in views]

    def _task_line(self, view: TaskView, width: int) -> Text:
        progress = view.progress
        if view.state == "running" and self.progress is not None:
            progress = self.progress(view.name)
        duration = view.duration
        after = Text.assemble(
            f"{view.attempt or '':>2}  ",
            f"{duration:6.1f}s" if duration is not None else " " * 7,
        )
        if view.note:
            after.append(f"  {_short(view.note)}", style="red" if view.state == "failed" else "dim")
        said = metrics_text(progress) if progress is not None and not view.note else ""
        if said:
            after.append(f"  {said}")
        line = Text.assemble((f"{SYMBOL.get(view.state, ' ')} ", STYLE.get(view.state, "")), view.name.ljust(width),
                             "  ")
        count = count_text(progress) if progress is not None and view.state == "running" else None
        if count is None:
            state = view.state + (" (cached)" if view.cached else "")
            line.append(state.ljust(STATE_WIDTH), STYLE.get(view.state, ""))
        else:  # the bar narrows (down to its least) rather than the first metric being cut
            widest = max(len(count), len(count_text(progress, progress.total)))  # the bar keeps its width
            cells = max(BAR_WIDTH[0], min(BAR_WIDTH[1], STATE_WIDTH - 2 - widest))
            first = metrics_text(progress, most=1)  # the metric the step put first stays whole
            kept = after.cell_len - len(said) + len(first)
            over = line.cell_len + cells + 1 + len(count) + kept - self.console.width
            if over > 0:
                cells = max(BAR_WIDTH[0], cells - over)
            if progress.fraction is None:
                line.append(count.ljust(STATE_WIDTH))
            else:
                line.append(bar(progress.fraction, cells), STYLE["running"])
                line.append(" " + count.ljust(STATE_WIDTH - cells - 1))
        line.append_text(after)
        if not view.note and progress is not None and progress.message:  # what is left of the line
            line.append(f"  {_short(progress.message)}", style="dim")
        return _line(line)

    def _print_plain(self, events: list[Event]) -> None:
        detailed = self.detailed
        for event in events:
            state = event.state.value
            if state in ("pending", "running"):
                continue
            if detailed or state in ("failed", "retrying"):
                view = self.views.get(event.task)
                note = f": {_short(view.note)}" if view and view.note and state != "succeeded" else ""
                if not note and view and view.progress and (said := progress_text(view.progress)):
                    note = f" ({_short(said)})"
                cached = " (cached)" if view and view.cached else ""
                self.console.print(
                    f"{SYMBOL.get(state, ' ')} {event.task} {state}{cached}{note}",
                    highlight=False,
                    markup=False,
                )


def bar(fraction: float, cells: int) -> str:
    """A bar of ``cells`` character cells filled to ``fraction``, in eighths of a cell."""
    eighths = round(min(max(fraction, 0.0), 1.0) * cells * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(cells, "░")


def _line(text: Text) -> Text:
    """One screen line: never wrapped, cut at its end if too long."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
