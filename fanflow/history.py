"""A project's runs as a reader sees them: filtered and sorted lists of run summaries, the
live state of every task, a page of a step's tasks, every attempt with its error and
traceback, what a running task last reported (its progress), and where each attempt's stdout
and stderr are.

This is what a dashboard or a notebook reads (``fanflow ui`` shows nothing else); it never
writes. ``Run`` (``fanflow.results``) is the whole of one run, its outputs loadable; the
reads here stay cheap on a run of 10,000 tasks and a store of thousands of runs.

    history = History(Project())
    history.find(states={"failed"}, workflow="video-entity-tagging", limit=20)
    history.attempts(run_id, "train[model=cnn]")[-1].traceback
    history.progress(run_id, "train[model=cnn]").metrics
    history.log_path(run_id, "train[model=cnn]", attempt=1, stream="err").read_text()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from fanflow.engine.runner import file_name
from fanflow.project import Project
from fanflow.results import Task
from fanflow.spec.model import Workflow
from fanflow.stores.runs import RUN_SORTS, RunRow
from fanflow.vocab.progress import Progress
from fanflow.vocab.states import TERMINAL

__all__ = ["RUN_SORTS", "Attempt", "History", "RunSummary", "TaskState"]

FINAL_STATES = frozenset(state.value for state in TERMINAL)


@dataclass(frozen=True)
class RunSummary:
    """One run without its tasks: what a list of runs shows."""

    id: str
    workflow: str
    state: str  # running, succeeded, failed, cancelled, or interrupted (its engine died)
    started: float
    ended: float | None
    error: str | None
    params: dict
    resumed_from: str | None
    source: str | None  # the workflow file it ran
    home: str | None
    host: str | None
    pid: int | None
    counts: dict[str, int] = field(default_factory=dict)  # tasks by state

    @property
    def duration(self) -> float | None:
        return self.ended - self.started if self.ended else None

    @property
    def tasks(self) -> int:
        return sum(self.counts.values())

    @property
    def live(self) -> bool:
        return self.state == "running"

    @classmethod
    def of(cls, row: RunRow, counts: dict[str, int]) -> RunSummary:
        return cls(row.id, row.workflow, row.state, row.started, row.ended, row.error, row.params,
                   row.resumed_from, row.source, row.home, row.host, row.pid, counts)


class TaskState(NamedTuple):
    """A task's state at one moment (the first fields of ``results.Task``, as a tuple): what
    a live view compares from one moment to the next."""

    name: str
    step: str
    state: str
    attempts: int
    started: float | None
    ended: float | None
    cached: bool


@dataclass(frozen=True)
class Attempt:
    """One attempt of a task: where it ran, how long, and how it ended."""

    task: str
    number: int
    state: str  # running, succeeded, failed, cancelled, cached, exited (a service restarted)
    started: float | None
    ended: float | None
    worker: str | None
    exit_reason: str | None  # error, timeout, crashed, exited
    error: str | None
    traceback: str | None

    @property
    def duration(self) -> float | None:
        return self.ended - self.started if self.started and self.ended else None


class History:
    """Reads of a project's run store (see the module's docstring)."""

    def __init__(self, project: Project):
        self.project = project
        self._store = project.store

    # -- runs ---------------------------------------------------------------------------
    def find(self, limit: int = 100, **filters) -> list[RunSummary]:
        """Runs with their task counts, filtered, sorted and paged as ``RunStore.find_runs``
        says: ``offset``, ``workflow``, ``states`` (any of), ``text`` (in the id, workflow,
        parameters or error), ``ids``, ``sort`` (one of ``RUN_SORTS``), ``descending``."""
        return self._summaries(self._store.find_runs(limit, **filters))

    def changed_since(self, since: float) -> list[RunSummary]:
        """Runs started or ended since ``since`` (a time.time()), and every live run."""
        return self._summaries(self._store.runs_changed_since(since))

    def summary(self, run_id: str, *, counts: bool = True) -> RunSummary:
        """One run, by id or unique prefix (``RunNotFound`` when none matches); without its
        task counts (a little cheaper) when ``counts`` is False."""
        row = self.project.get_run(run_id)
        return self._summaries([row])[0] if counts else RunSummary.of(row, {})

    def _summaries(self, rows: list[RunRow]) -> list[RunSummary]:
        counts = self._store.task_counts([row.id for row in rows])
        return [RunSummary.of(row, counts[row.id]) for row in rows]

    def workflow(self, run_id: str) -> Workflow:
        """The workflow a run ran, as it was recorded."""
        return Project.workflow_of(self.project.get_run(run_id))

    def workflows(self) -> list[tuple[str, str]]:
        """(name, file) of every workflow this project has run from a file, latest first."""
        return self._store.workflow_sources()

    # -- tasks --------------------------------------------------------------------------
    def task_states(self, run_id: str, **filters) -> list[TaskState]:
        """Every task's state, or as ``RunStore.task_states`` filters them (``since`` and
        ``created``: those that may have changed; ``cached``)."""
        return [TaskState(*row[:6], bool(row[6])) for row in self._store.task_states(run_id, **filters)]

    def step_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Tasks by state, for each step of a run that has tasks."""
        return self._store.step_counts(run_id)

    def tasks(self, run_id: str, **filters) -> list[Task]:
        """A run's tasks in creation order, filtered and paged as ``RunStore.tasks`` says
        (``step``, ``names``, ``states``, ``limit``, ``offset``); their outputs stay
        manifests (``Run.load`` loads one)."""
        return [Task.from_row(t) for t in self._store.tasks(run_id, **filters)]

    def task(self, run_id: str, name: str) -> Task | None:
        found = self.tasks(run_id, names=[name])
        return found[0] if found else None

    def attempts(self, run_id: str, task: str | None = None, *, since: float | None = None) -> list[Attempt]:
        """Every attempt of a run (or of one task), oldest first; with ``since``, only those
        still going or that started or ended since then."""
        return [
            Attempt(a["task"], a["attempt"], a["state"], a["started"], a["ended"], a["worker"],
                    a["exit_reason"], a["error"], a["traceback"])
            for a in self._store.attempts(run_id, task, since)
        ]

    def attempt_spans(self, run_id: str, since: float | None = None) -> list[tuple]:
        """Every attempt (or those going or moved on since ``since``) as (task, attempt,
        worker, started, ended, state): a timeline's bars, cheaply."""
        return self._store.attempt_spans(run_id, since)

    def inputs(self, run_id: str, task: str) -> dict[str, list[str]]:
        """The artifacts a task read, by the task of the run that wrote each (or "" when
        it came from elsewhere: an earlier run, the cache)."""
        links = self._store.lineage(run_id)
        writers = {link["digest"]: link["task"] for link in links if link["role"] == "output"}
        found: dict[str, list[str]] = {}
        for link in links:
            if link["task"] == task and link["role"] == "input":
                found.setdefault(writers.get(link["digest"], ""), []).append(link["digest"])
        return found

    def progress(self, run_id: str, task: str) -> Progress | None:
        """What the task last reported while it ran (``fanflow.progress``), as the engine last
        wrote it (about every second while the task runs), or None."""
        return self._store.progress(run_id, task).get(task)

    def log_path(self, run: RunSummary, task: str, attempt: int, stream: str) -> Path:
        return log_path(run.home or self.project.home, run.id, task, attempt, stream)


def log_folder(home: str | Path, run_id: str) -> Path:
    """Where a run's logs are (the runner writes them there: ``Runner.log_dir``)."""
    return Path(home) / "logs" / run_id


def log_path(home: str | Path, run_id: str, task: str, attempt: int, stream: str) -> Path:
    """Where an attempt's ``stream`` ("out" or "err") is written: one rule for the engine's
    readers (``fanflow logs``, the UI)."""
    if stream not in ("out", "err"):
        raise ValueError(f"stream must be 'out' or 'err', got {stream!r}")
    return log_folder(home, run_id) / f"{file_name(task)}.{attempt}.{stream}"
