"""fanflow from Python: run a workflow, get its ``Run`` back, read past runs.

    import fanflow

    run = fanflow.run("workflow.yaml", n=5)     # a file, an installed workflow, a Workflow
    run = wf.run(n=5)                           # a flow built with fanflow.flow(...)
    run.state, run.tasks["total"].duration, run["total"]
    fanflow.runs()[:3], fanflow.Run.get("20240501-120000-ab12")

A call blocks until the run ends, with the project's store (the same one every ``fanflow``
command uses), the cache, and the local executor unless told otherwise. Errors are the command
line's: a workflow or parameters that cannot run raise ``SpecError`` (the CLI's exit 2), a
run that fails or is cancelled raises ``RunFailed`` holding the ``Run`` (exit 1 or 130) unless
``raise_on_failure=False``, which returns it instead.

This module stays light (it defines ``fanflow.flow``, which worker processes import with the
steps): the engine is imported when a run starts.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from typing import TYPE_CHECKING, Any

from fanflow.errors import RunFailed
from fanflow.spec.python_api import FlowBuilder

if TYPE_CHECKING:
    from fanflow.engine.runner import Runner
    from fanflow.project import Project
    from fanflow.results import Run
    from fanflow.spec.model import Workflow


class Flow(FlowBuilder):
    """A workflow written in Python (see ``fanflow.flow``) that can also be run from Python."""

    def run(self, **options: Any) -> Run:
        """Run this workflow; keyword arguments are its parameters and ``run``'s options."""
        return run(self, **options)

    async def run_async(self, **options: Any) -> Run:
        return await run_async(self, **options)


def flow(name: str, *, params: dict[str, Any] | None = None, **options: Any) -> Flow:
    """Start a workflow written in Python: decorate its steps with ``@wf.step()``."""
    return Flow(name, params=params, **options)


def run(workflow: Workflow | FlowBuilder | str | os.PathLike, /, *, raise_on_failure: bool = True,
        **options: Any) -> Run:
    """Run a workflow and return its ``Run`` once it has ended.

    ``workflow`` is a flow built in Python, a ``Workflow``, a workflow file (YAML or Python),
    a bundle, or the name of an installed workflow. Options: ``executor`` ("local" or "ray"),
    ``executor_options`` (``{"address": ...}`` for Ray), ``cache`` (False runs every task),
    ``home`` (the store folder), ``preset`` (one of the workflow's named parameter sets, whose
    values the parameters given here override), ``params`` (a dict); every other keyword
    argument is one of the workflow's parameters."""
    project, runner = _prepare(workflow, **options)
    try:
        runner.run()
        return _finish(project, runner, raise_on_failure)
    finally:
        project.close()


async def run_async(workflow: Workflow | FlowBuilder | str | os.PathLike, /, *, raise_on_failure: bool = True,
                    **options: Any) -> Run:
    """``run`` for asyncio code: the run goes on in a thread; cancelling the awaiting task
    cancels the run (its tasks are stopped) and waits for it to end."""
    project, runner = _prepare(workflow, **options)
    try:
        running = asyncio.get_running_loop().run_in_executor(None, runner.run)
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            runner.request_stop("cancelled")
            await running
            raise
        return _finish(project, runner, raise_on_failure)
    finally:
        project.close()


def runs(limit: int = 20, *, workflow: str | None = None, home: str | os.PathLike | None = None) -> list[Run]:
    """The project's most recent runs, newest first."""
    from fanflow.project import Project
    from fanflow.results import Run

    project = Project(home)
    try:
        return [Run(row, project.store.tasks(row.id), project.artifacts_url, project.store.progress(row.id))
                for row in project.store.list_runs(limit, workflow)]
    finally:
        project.close()


def _prepare(
    workflow,
    *,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    cache: bool = True,
    home: str | os.PathLike | None = None,
    preset: str | None = None,
    params: dict[str, Any] | None = None,
    **values: Any,
) -> tuple[Project, Runner]:
    from fanflow.project import Project
    from fanflow.spec.presets import apply_preset

    project = Project(home)
    try:
        spec = apply_preset(_workflow(workflow, project), preset)
        return project, project.runner(spec, params={**(params or {}), **values}, executor=executor,
                                       executor_options=executor_options, cache=cache)
    except BaseException:
        project.close()
        raise


def _finish(project: Project, runner: Runner, raise_on_failure: bool) -> Run:
    from fanflow.results import Run

    result = Run.read(project, runner.run_id)
    if raise_on_failure and not result.succeeded:
        raise RunFailed(result)
    return result


def _workflow(workflow, project: Project) -> Workflow:
    from fanflow.spec.loader import load_workflow
    from fanflow.spec.model import Workflow

    if isinstance(workflow, FlowBuilder):
        return workflow.spec()
    if isinstance(workflow, Workflow):
        return workflow
    if isinstance(workflow, str | os.PathLike):
        located = project.locate(workflow)
        for warning in located.warnings:
            warnings.warn(warning, stacklevel=3)
        return load_workflow(located.path)
    raise TypeError(f"fanflow.run: expected a workflow, a flow, a file or a name, got {type(workflow).__name__}")
