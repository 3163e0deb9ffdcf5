"""When a step runs on Argo, with the engine's meaning: its ``depends`` expression over the
results of the tasks it waits for, and its ``when`` over verdicts.

A verdict is a condition's value (``true`` or ``false``) that a pod decided with the
engine's own evaluator (``fanflow.spec.conditions``) and handed to Argo as an output
parameter: Argo compares no values of its own, so every condition the engine can evaluate
means the same on Argo. Since the engine skips what depends on a skipped step, a step's
``when`` joins its own verdict with those of every step it depends on: a looped task whose
branches were all skipped counts as succeeded on Argo.
"""

from __future__ import annotations

from collections.abc import Callable

from fanflow.spec import graph
from fanflow.spec.model import Step, Workflow

BEGIN = "<begin>"  # stands for the run's first task where a step name is expected


def has_condition(step: Step) -> bool:
    return step.when is False or (isinstance(step.when, str) and bool(step.when.strip()))


def depends(workflow: Workflow, name: str, task: Callable[[str], str]) -> str:
    """Run once every step ``name`` waits for succeeded; for a quorum fan-in, once the
    branches it collects finished however they ended (its pod counts the quorum). ``task``
    gives a step's Argo task name (``BEGIN`` the first task's)."""
    upstream = graph.upstream(workflow, name)
    if not upstream:
        return f"{task(BEGIN)}.Succeeded"
    step = workflow.steps[name]
    tolerated = set(graph.fans_in(workflow, name)) if step.min_success is not None else set()
    terms = []
    for up in upstream:
        t = task(up)
        terms.append(f"({t}.Succeeded || {t}.Failed || {t}.Errored)" if up in tolerated else f"{t}.Succeeded")
    return " && ".join(terms)


def when(workflow: Workflow, name: str, verdict: Callable[[str], str | None]) -> str | None:
    """The Argo ``when`` of a step: the verdicts of its own condition and of every step it
    depends on, directly or not (``verdict`` gives a step's verdict as Argo text)."""
    needed = graph.closure(workflow, {name})
    parts: list[str] = []
    for step in workflow.steps:
        if step in needed and has_condition(workflow.steps[step]):
            text = verdict(step)
            if text is not None and text not in parts:
                parts.append(text)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else " && ".join(f"({p})" for p in parts)
