"""Drive the pure scheduling core by hand, with the results a test chooses."""

from __future__ import annotations

from fanflow.engine.core import Scheduler, Task
from fanflow.engine.plan import Plan
from fanflow.spec.loader import workflow_from_dict
from fanflow.vocab.states import State


def scheduler(steps: dict, params: dict | None = None, capacity: dict | None = None, window: int = 4096,
              **workflow) -> Scheduler:
    spec = workflow_from_dict({"name": "t", "params": params or {}, "steps": steps, **workflow}, check_imports=False)
    return Scheduler(Plan.build(spec), capacity or {"cpus": 4}, window=window)


def step(core: Scheduler, now: float, reuse=None) -> list[Task]:
    """One round: take what became ready (reusing what ``reuse(task)`` finds, a value or
    None), then what may start now."""
    for task in core.ready(now):
        found = reuse(task) if reuse else None
        if found is not None:
            core.reused(task.name, found, now)
    return core.admit(now)


def stop_requested(core: Scheduler, now: float) -> None:
    """Report every task the core asked to stop as cancelled (one that ended meanwhile is
    not running any more: nothing to report)."""
    for name in core.stops():
        if core.state(name) in (State.RUNNING, State.SERVING):
            core.cancelled(name, now, "stopped")


def run_all(core: Scheduler, outcome, now: float = 0.0, max_rounds: int = 10_000) -> dict[str, Task]:
    """Complete every task the core hands out, in order, with ``outcome(task) -> (ok, value)``;
    returns each task as it was last started (its inputs included), in the order tasks
    first started."""
    started: dict[str, Task] = {}
    core.start(now)
    for _ in range(max_rounds):
        if core.done:
            return started
        now += 1.0
        tasks = step(core, now)
        stop_requested(core, now)
        if not tasks and core.next_wakeup() is not None:
            now = core.next_wakeup()
            continue
        for task in tasks:
            started[task.name] = task
            if core.state(task.name) is not State.RUNNING:
                continue
            ok, value = outcome(task)
            if ok:
                core.succeeded(task.name, value, now)
            else:
                core.failed(task.name, value, now)
    raise AssertionError("the run did not terminate")


def run_workflow(home, spec, executor: str = "local", **options):
    """Run a workflow for real in a fresh project at ``home``."""
    from fanflow.project import Project

    project = Project(home)
    try:
        return project.run(spec, executor=executor, **options)
    finally:
        project.close()
