"""A fanflow project: the folder (``.fanflow`` by default) that holds the run store, the
artifact store and the logs, and the entry points that run and resume workflows in it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanflow.engine.cache import StoreMemo
from fanflow.engine.runner import Runner, RunResult
from fanflow.executors import create_executor
from fanflow.spec import graph
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Workflow
from fanflow.stores.runs import RunStore, default_url
from fanflow.vocab.states import Event


class RunNotFound(LookupError):
    pass


class Project:
    def __init__(
        self, home: str | os.PathLike | None = None, *, db: str | None = None, artifacts: str | None = None
    ):
        self.home = Path(home or os.environ.get("FANFLOW_HOME", ".fanflow")).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_url = db or default_url(self.home)
        self.artifacts_url = artifacts or os.environ.get("FANFLOW_ARTIFACTS") or str(self.home / "artifacts")
        self._store: RunStore | None = None

    @property
    def store(self) -> RunStore:
        if self._store is None:
            self._store = RunStore(self.db_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def runner(
        self,
        workflow: Workflow,
        *,
        params: dict[str, Any] | None = None,
        executor: str = "local",
        executor_options: dict[str, Any] | None = None,
        cache: bool = True,
        keep_services: bool = False,
        listeners: list[Callable[[list[Event]], None]] | None = None,
        resume: str | None = None,
    ) -> Runner:
        previous = None
        if resume:
            previous = {t["name"]: t for t in self.store.tasks(resume) if t["state"] == "succeeded"}
        memo = StoreMemo(
            self.store,
            use_cache=cache,
            previous=previous,
            source=workflow.source,
            no_cache_steps={n for n, s in workflow.steps.items() if not s.cache},
            import_paths=workflow.import_paths,
        )
        return Runner(
            workflow,
            create_executor(executor, **(executor_options or {})),
            params=params,
            home=self.home,
            artifacts=self.artifacts_url,
            recorder=self.store,
            memo=memo,
            listeners=listeners,
            keep_services=keep_services,
            resumed_from=resume,
        )

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
        """The workflow and parameters of an earlier run, to continue it."""
        row = self.store.get_run(run_id)
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.db_url}")
        if row.state == "running" and not allow_running:
            raise SpecError(SpecIssue(f"run {row.id} is still running (pid alive); stop it first"))
        if row.state == "interrupted":
            self.store.mark_interrupted(row.id)
        spec = dict(row.spec)
        workflow = Workflow.model_validate({**spec, "source": row.source})
        return workflow, row.params, row.id
