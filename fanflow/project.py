"""A fanflow project: the folder (``.fanflow`` at the project's root) that holds the run store,
the artifact store and the logs, and the entry points that run and resume workflows in it.

One store per project, wherever in it a command runs: the folder is ``$FANFLOW_HOME`` when set,
else ``.fanflow`` in the nearest folder, from the current one upwards, that holds a
``pyproject.toml``, a ``.git`` or a ``.fanflow`` (the project's root); else ``.fanflow`` in the
current folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fanflow.spec import graph
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Workflow
from fanflow.stores.dbfile import default_url
from fanflow.stores.errors import RunLeased
from fanflow.vocab.imports import shipped_digest
from fanflow.vocab.states import Event

if TYPE_CHECKING:  # the engine and the stores are imported when used: commands that only read files need neither
    from fanflow.engine.runner import Runner, RunResult
    from fanflow.executors import Executor
    from fanflow.stores.artifacts import ArtifactStore
    from fanflow.stores.runs import RunRow, RunStore

HOME_ENV = "FANFLOW_HOME"
HOME_FOLDER = ".fanflow"
ROOT_MARKERS = ("pyproject.toml", ".git", HOME_FOLDER)


def find_home(start: str | os.PathLike | None = None) -> Path:
    """The project's store folder, by the rule in this module's docstring."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder / HOME_FOLDER
    return here / HOME_FOLDER


@dataclass
class Located:
    """A workflow file a name points to, and what to warn about before running it."""

    path: Path
    warnings: list[str] = field(default_factory=list)


class Project:
    def __init__(
        self, home: str | os.PathLike | None = None, *, db: str | None = None, artifacts: str | None = None
    ):
        self.home = Path(home).resolve() if home else find_home()  # made when first written to
        self.db_url = db or default_url(self.home)
        self.artifacts_url = artifacts or os.environ.get("FANFLOW_ARTIFACTS") or str(self.home / "artifacts")
        self._store: RunStore | None = None

    @property
    def store(self) -> RunStore:
        if self._store is None:
            from fanflow.stores.runs import RunStore

            self._store = RunStore(self.db_url)
        return self._store

    def artifacts(self) -> ArtifactStore:
        from fanflow.stores.artifacts import ArtifactStore

        return ArtifactStore(self.artifacts_url)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def locate(self, target: str | os.PathLike) -> Located:
        """The workflow file ``target`` names: a file, a bundle (checked and unpacked into the
        project), or the name of an installed workflow (``fanflow list``)."""
        from fanflow import bundle

        path = Path(target)
        if bundle.is_bundle(path):
            workflow, manifest = bundle.unpack(path, self.home)
            problems = bundle.missing_requirements(manifest)
            return Located(workflow, [f"{p} (see {workflow.parent}/requirements.txt)" for p in problems])
        if path.exists() or path.suffix or len(path.parts) > 1:
            return Located(path)
        from fanflow.spec.registry import find_installed

        try:
            return Located(find_installed(str(path)))
        except LookupError as exc:
            raise SpecError(SpecIssue(f"no such file, and {exc}", file=str(path))) from None

    def get_run(self, run_id: str) -> RunRow:
        """The run ``run_id`` names: its id, a unique prefix of it, or ``latest``. Raises
        RunNotFound, or AmbiguousRun (a RunNotFound) listing the runs a prefix matches."""
        return self.store.find_run(run_id)

    def runner(
        self,
        workflow: Workflow,
        *,
        params: dict[str, Any] | None = None,
        executor: str | Executor = "local",
        executor_options: dict[str, Any] | None = None,
        cache: bool = True,
        keep_services: bool = False,
        listeners: list[Callable[[list[Event]], None]] | None = None,
        resume: str | None = None,
        run_id: str | None = None,
    ) -> Runner:
        from fanflow.engine.cache import CodeHasher, StoreMemo
        from fanflow.engine.runner import Runner
        from fanflow.executors import create_executor

        previous = None
        if resume:
            previous = {t["name"]: t for t in self.store.tasks(resume) if t["state"] == "succeeded"}
        code = CodeHasher(
            workflow.source,
            workflow.import_paths,
            shipped=self.ship(workflow),
            steps={step.uses for step in workflow.steps.values()},
        )
        memo = StoreMemo(
            self.store,
            use_cache=cache,
            previous=previous,
            code=code,
            no_cache_steps={n for n, s in workflow.steps.items() if not s.cache},
            artifacts=self.artifacts(),
        )
        return Runner(
            workflow,
            create_executor(executor, **(executor_options or {})) if isinstance(executor, str) else executor,
            params=params,
            home=self.home,
            artifacts=self.artifacts_url,
            recorder=self.store,
            memo=memo,
            listeners=listeners,
            keep_services=keep_services,
            resumed_from=resume,
            run_id=run_id,
        )

    def ship(self, workflow: Workflow) -> dict[str, str]:
        """Put the code shipped with ``workflow`` (steps defined in a notebook) into the
        artifact store, where workers read it; returns every shipped step's source by digest,
        read back from the store for a workflow that no longer carries it (a resumed run)."""
        from fanflow.stores.artifacts import ArtifactNotFound
        from fanflow.stores.code import put_code, read_code

        store = self.artifacts()
        for digest, source in workflow.code.items():
            stored = put_code(store, source)
            if stored != digest:
                raise SpecError(SpecIssue(f"shipped code {digest} does not match its content ({stored})"))
        shipped = {}
        for name, step in workflow.steps.items():
            digest = shipped_digest(step.uses)
            if digest is None or digest in shipped:
                continue
            try:
                shipped[digest] = workflow.code.get(digest) or read_code(store, digest)
            except ArtifactNotFound:
                raise SpecError(SpecIssue(
                    f"the code of step {name!r} (shipped from a notebook) is no longer in the artifact "
                    f"store at {store.url}: run the notebook's workflow again", field=f"steps.{name}",
                )) from None
        return shipped

    def run(self, workflow: Workflow, **options: Any) -> RunResult:
        return self.runner(workflow, **options).run()

    def servable(self, run_id: str) -> tuple[Workflow, dict[str, Any], str]:
        """The part of an earlier run that brings its services back up: the service steps and
        what they need, without the steps that used them. Run it with ``resume`` set to the
        earlier run, so every task but the services is reused, not run again."""
        workflow, params, previous = self.resumable(run_id, allow_running=True)
        services = {name for name, step in workflow.steps.items() if step.kind == "service"}
        if not services:
            raise SpecError(SpecIssue(f"run {previous} has no service steps to bring up"))
        needed = graph.closure(workflow, services)
        steps = {name: step for name, step in workflow.steps.items() if name in needed}
        return workflow.model_copy(update={"steps": steps}), params, previous

    def resumable(self, run_id: str, allow_running: bool = False) -> tuple[Workflow, dict[str, Any], str]:
        """The workflow and parameters of an earlier run (its id, a unique prefix, or
        ``latest``), to continue it. Refused while another engine continues it (the lease
        taken when the run begins is what makes that safe; this only says so early)."""
        row = self.get_run(run_id)
        if row.state == "running" and not allow_running:
            raise SpecError(SpecIssue(f"run {row.id} is still running (pid alive); stop it first"))
        holder = self.store.lease_holder(row.id)
        if holder is not None:
            raise RunLeased(
                f"run {row.id} is already being continued by run {holder.id} (pid {holder.pid} on "
                f"{holder.host}): wait for it to end, or stop it first"
            )
        if row.state == "interrupted":
            self.store.mark_interrupted(row.id)
        return self.workflow_of(row), row.params, row.id

    @staticmethod
    def workflow_of(row: RunRow) -> Workflow:
        """The workflow a recorded run ran."""
        return Workflow.model_validate({**row.spec, "source": row.source})
