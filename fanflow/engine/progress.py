"""What the engine knows of its running tasks' progress: the reports that steps send while
they run (``fanflow.progress``, ``fanflow.log``), folded into the latest ``Progress`` of each
task attempt, and written to the run store at most every ``RECORD_EVERY`` seconds (every
change of that time in one transaction), so that a step that reports often costs the engine
nothing more than one that reports now and then.
"""

from __future__ import annotations

from typing import Any

from fanflow.vocab.progress import Progress

RECORD_EVERY = 1.0  # seconds between two writes of progress to the run store


class ProgressBook:
    def __init__(self):
        self._latest: dict[str, Progress] = {}
        self._changed: dict[str, Progress] = {}  # not written yet
        self._ended: set[str] = set()  # tasks whose attempt ended: forgotten once written
        self._written = 0.0

    def report(self, task: str, attempt: int, report: dict[str, Any]) -> None:
        progress = self._latest.get(task)
        if progress is None or progress.attempt != attempt:
            progress = self._latest[task] = Progress(attempt)
            self._ended.discard(task)
        progress.merge(report)
        self._changed[task] = progress

    def latest(self, task: str) -> Progress | None:
        """The task's progress now (the live view asks, from its own thread)."""
        return self._latest.get(task)

    def ended(self, task: str) -> None:
        """The task's attempt ended: keep its progress until it is written."""
        if task in self._latest:
            self._ended.add(task)

    def due(self, now: float, *, everything: bool = False) -> list[tuple[str, Progress]]:
        """What to write now: every change since the last write, if ``RECORD_EVERY`` has
        passed (or ``everything``, at the end of the run); else nothing."""
        if not self._changed or (not everything and now - self._written < RECORD_EVERY):
            return []
        self._written = now
        changed, self._changed = list(self._changed.items()), {}
        for task in self._ended:
            self._latest.pop(task, None)
        self._ended.clear()
        return changed
