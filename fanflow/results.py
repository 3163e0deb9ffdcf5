"""A run as Python sees it: its state, each task's state and timings, its outputs loaded on
first use by step name, its stored files as paths, and a table for Jupyter.

A ``Run`` is read from the run store, so a run just finished (``fanflow.run``) and one read
back later (``fanflow.Run.get``, ``fanflow.runs``) are the same object. What its tasks
reported while they ran (``fanflow.progress``) is each ``Task``'s ``progress``: the latest
count, metrics and message, and the history of the metrics."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanflow.project import Project
from fanflow.spec import graph
from fanflow.spec.validate import importable_from
from fanflow.stores.artifacts import ArtifactStore
from fanflow.stores.export import Exported, export_task
from fanflow.stores.runs import RunRow
from fanflow.stores.values import decode
from fanflow.vocab.manifest import ARTIFACT_KEY, SUMMARY_KEY, map_artifacts
from fanflow.vocab.progress import Progress, summary
from fanflow.vocab.states import OK

_OK = {state.value for state in OK}
_COLOURS = {"succeeded": "#1a7f37", "failed": "#cf222e", "cancelled": "#9a6700", "running": "#0969da"}


@dataclass
class Task:
    """One task of a run: ``train[model=cnn]``, say."""

    name: str
    step: str
    state: str
    attempts: int
    started: float | None
    ended: float | None
    cached: bool  # reused from an earlier run, not run again
    error: str | None
    reason: str | None  # why it was skipped or cancelled
    item: dict | None  # its fan-out item
    manifest: Any = field(default=None, repr=False)
    _run: Run | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: dict, run: Run | None = None) -> Task:
        """A task as the run store holds it (``RunStore.tasks``)."""
        return cls(row["name"], row["step"], row["state"], row["attempts"], row["started"], row["ended"],
                   bool(row["cached"]), row["error"], row["reason"], row["item"], row["output"], run)

    @property
    def duration(self) -> float | None:
        return self.ended - self.started if self.started and self.ended else None

    @property
    def output(self) -> Any:
        """What the task returned, loaded from the artifact store."""
        return None if self.manifest is None or self._run is None else self._run.load(self.manifest)

    @property
    def progress(self) -> Progress | None:
        """What the task last reported while it ran (``fanflow.progress``, ``fanflow.log``),
        or None: ``done``, ``total``, ``unit``, ``fraction`` (0 to 1), ``metrics`` (the latest
        value of each), ``message``, ``updated`` (when), ``attempt``, and ``history``, points
        of (time, done, metrics) for charts (``series(name)``: one metric's (done, value))."""
        return None if self._run is None else self._run.progress.get(self.name)

    @property
    def metrics(self) -> dict[str, float | None]:
        """The latest value of each metric the task reported (empty if it reported none)."""
        progress = self.progress
        return dict(progress.metrics) if progress else {}


class Run:
    """One run of a workflow, read from the project's run store."""

    def __init__(self, row: RunRow, tasks: list[dict], artifacts_url: str,
                 progress: dict[str, Progress] | None = None):
        self.id = row.id
        self.workflow = row.workflow
        self.state = row.state
        self.error = row.error
        self.params = row.params
        self.started = row.started
        self.ended = row.ended
        self.resumed_from = row.resumed_from
        self._row = row
        self._artifacts_url = artifacts_url
        self.tasks: dict[str, Task] = {t["name"]: Task.from_row(t, self) for t in tasks}
        self.outputs = Outputs(self)
        self.progress: dict[str, Progress] = dict(progress or {})  # by task, as RunStore.progress reads it

    # -- reading runs -------------------------------------------------------------------
    @classmethod
    def get(cls, run_id: str, *, home: str | Path | None = None) -> Run:
        """A past run of the project, by id or a unique prefix of it (``RunNotFound`` when
        none matches)."""
        project = Project(home)
        try:
            return cls.read(project, run_id)
        finally:
            project.close()

    @classmethod
    def read(cls, project: Project, run_id: str) -> Run:
        row = project.get_run(run_id)
        return cls(row, project.store.tasks(row.id), project.artifacts_url, project.store.progress(row.id))

    # -- what it did --------------------------------------------------------------------
    @property
    def duration(self) -> float | None:
        return self.ended - self.started if self.ended else None

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    @property
    def steps(self) -> list[str]:
        """The workflow's steps, in declared order."""
        return list(self._row.spec.get("steps", {}))

    def is_fanned_out(self, step: str) -> bool:
        return bool(self._row.spec.get("steps", {}).get(step, {}).get("fan_out"))

    @property
    def results(self) -> dict[str, Any]:
        """The outputs of the steps nothing else waits for (the workflow's results)."""
        leaves = graph.leaves(Project.workflow_of(self._row))
        return {step: self.outputs[step] for step in leaves if step in self.outputs}

    def __getitem__(self, step: str) -> Any:
        """``run["total"]``: the output of a step (a list over its branches if it fans out)."""
        return self.outputs[step]

    @property
    def artifacts(self) -> dict[str, Any]:
        """Each task's output with every stored file or array as the path of its object in the
        artifact store (nothing is loaded), by task name."""
        store = self._store()
        return {
            name: map_artifacts(task.manifest, lambda ref, _: store.path(ref[ARTIFACT_KEY], ref.get("suffix", "")))
            for name, task in self.tasks.items()
            if task.state in _OK and task.manifest is not None
        }

    def summaries(self) -> dict[str, str]:
        """What the run's steps asked its summary to show, by task, in the workflow's step
        order: the Markdown of each finished task whose output holds ``run_summary`` (text, or
        a Markdown file); nothing else of the output is loaded."""
        order = {step: index for index, step in enumerate(self.steps)}
        found = {}
        for task in sorted(self.tasks.values(), key=lambda t: order.get(t.step, len(order))):
            if task.state in _OK and isinstance(task.manifest, dict) and SUMMARY_KEY in task.manifest:
                value = self.load(task.manifest[SUMMARY_KEY])
                found[task.name] = value.read_text(encoding="utf-8") if isinstance(value, Path) else str(value)
        return found

    def export(self, out: str | Path) -> list[Exported]:
        """Copy every output under ``out`` with readable names (``STEP/NAME.EXT``; a branch in
        ``STEP/AXIS=LABEL/``); returns the files written."""
        store = self._store()
        written: list[Exported] = []
        for name, task in self.tasks.items():
            if task.state in _OK:
                written += export_task(name, task.manifest, store, out)
        return written

    def load(self, manifest: Any) -> Any:
        """A manifest of this run, its artifacts loaded."""
        with importable_from(self._row.source, self._row.spec.get("import_paths", [])):
            return decode(manifest, self._store())

    def _store(self) -> ArtifactStore:
        return ArtifactStore(self._artifacts_url)

    # -- display ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for task in self.tasks.values():
            found[task.state] = found.get(task.state, 0) + 1
        return found

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        reused = sum(t.cached for t in self.tasks.values())
        took = f" in {self.duration:.1f}s" if self.duration is not None else ""
        return (f"<Run {self.id} {self.workflow} {self.state}{took}: {len(self.tasks)} tasks ({counts})"
                + (f", {reused} reused" if reused else "") + ">")

    def _repr_html_(self) -> str:
        return run_html(self)


class Outputs(Mapping):
    """A run's outputs by step name, each loaded from the artifact store on first use: one
    value, or a list in declared order for a step that fans out (its branches that succeeded)."""

    def __init__(self, run: Run):
        self._run = run
        self._loaded: dict[str, Any] = {}

    def _tasks(self, step: str) -> list[Task]:
        return [t for t in self._run.tasks.values() if t.step == step]

    def __getitem__(self, step: str) -> Any:
        if step in self._loaded:
            return self._loaded[step]
        tasks = self._tasks(step)
        done = [t for t in tasks if t.state in _OK]
        if not done:
            if not tasks:
                known = ", ".join(self._run.steps)
                raise KeyError(f"run {self._run.id} has no step {step!r} (steps: {known})")
            why = "; ".join(f"{t.name} {t.state}" + (f": {t.error or t.reason}" if t.error or t.reason else "")
                            for t in tasks[:3])
            raise KeyError(f"step {step!r} of run {self._run.id} has no output ({why})")
        values = [t.output for t in done]
        value = values if self._run.is_fanned_out(step) else values[0]
        self._loaded[step] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([step for step in self._run.steps if any(t.state in _OK for t in self._tasks(step))])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def run_html(run: Run, limit: int = 200) -> str:
    """A run as an HTML table (Jupyter's rich display); every text escaped."""
    e = html.escape
    colour = _COLOURS.get(run.state, "#cf222e")
    took = f" in {run.duration:.1f}s" if run.duration is not None else ""
    counts = ", ".join(f"{n} {e(s)}" for s, n in run.counts().items())
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started))
    head = (
        f"<p><b>{e(run.workflow)}</b> run <code>{e(run.id)}</code>: "
        f'<b style="color:{colour}">{e(run.state)}</b>{took} · started {started} · '
        f"{len(run.tasks)} tasks: {counts}</p>"
    )
    if run.error:
        head += f'<p style="color:#cf222e">{e(run.error)}</p>'
    rows = []
    for task in list(run.tasks.values())[:limit]:
        progress = task.progress
        note = task.error or task.reason or (summary(progress) if progress else "")
        rows.append(
            "<tr>"
            f"<td><code>{e(task.name)}</code></td>"
            f'<td style="color:{_COLOURS.get(task.state, "inherit")}">{e(task.state)}</td>'
            f"<td>{'reused' if task.cached else ''}</td>"
            f"<td>{task.attempts}</td>"
            f"<td>{'' if task.duration is None else f'{task.duration:.2f}s'}</td>"
            f"<td>{e(note[:300])}</td>"
            "</tr>"
        )
    more = len(run.tasks) - limit
    if more > 0:
        rows.append(f'<tr><td colspan="6">… and {more} more tasks</td></tr>')
    table = (
        '<table class="fanflow-run"><thead><tr><th>task</th><th>state</th><th></th><th>attempts</th>'
        "<th>time</th><th>error, reason or progress</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    return f'<div class="fanflow-run">{head}{table}</div>'
