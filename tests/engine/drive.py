"""Drive the pure scheduling core by hand, with the results a test chooses."""

from __future__ import annotations

from fanflow.engine.core import Scheduler
from fanflow.engine.plan import Plan
from fanflow.spec.loader import workflow_from_dict


def scheduler(steps: dict, params: dict | None = None, capacity: dict | None = None, **workflow) -> Scheduler:
    spec = workflow_from_dict({"name": "t", "params": params or {}, "steps": steps, **workflow}, check_imports=False)
    core = Scheduler(Plan.build(spec), capacity or {"cpus": 4})
    return core


def run_all(core: Scheduler, outcome, now: float = 0.0, max_rounds: int = 10_000) -> list[str]:
    """Complete every task the core hands out, in order, with ``outcome(task) -> (ok, value)``;
    returns the order tasks started in."""
    started = []
    core.start(now)
    for _ in range(max_rounds):
        if core.done:
            return started
        now += 1.0
        tasks = core.next_tasks(now)
        for name in core.drain_stop_requests():
            core.cancelled(name, now, "stopped")
        if not tasks and core.next_wakeup() is not None:
            now = core.next_wakeup()
            continue
        for task in tasks:
            started.append(task.name)
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
