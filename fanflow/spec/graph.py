"""Graph queries over a workflow spec: which steps a step waits for, which fanned-out steps
it collects, which steps nothing waits for, and everything a set of steps needs."""

from __future__ import annotations

from fanflow.spec.model import Step, Workflow
from fanflow.spec.refs import Ref, iter_refs


def step_refs(step: Step) -> list[tuple[Ref, tuple]]:
    """Every reference of a step with the path where it stands (relative to the step)."""
    found = list(iter_refs(step.with_, ("with",)))
    if step.fan_out:
        found += list(iter_refs(step.fan_out, ("fan_out",)))
    if isinstance(step.when, str):
        found += list(iter_refs(step.when, ("when",)))
    return found


def upstream(workflow: Workflow, name: str) -> list[str]:
    """The steps ``name`` depends on, in declared order: referenced ones and ``needs``."""
    step = workflow.steps[name]
    wanted = {ref.root for ref, _ in step_refs(step) if ref.is_step} | set(step.needs)
    if len(wanted) == 1:  # the usual case, without a pass over every step
        return [s for s in wanted if s in workflow.steps]
    return [s for s in workflow.steps if s in wanted] if wanted else []


def fans_in(workflow: Workflow, name: str) -> list[str]:
    """Fanned-out steps whose branches ``name`` collects (through ${x[*]} or needs)."""
    step = workflow.steps[name]
    collected = {ref.root for ref, _ in step_refs(step) if ref.collect}
    collected |= {n for n in step.needs if n in workflow.steps and workflow.steps[n].fan_out}
    return [s for s in workflow.steps if s in collected]


def downstream(workflow: Workflow, name: str) -> list[str]:
    """The steps that wait for ``name``, in declared order."""
    return [s for s in workflow.steps if name in upstream(workflow, s)]


def leaves(workflow: Workflow) -> list[str]:
    """The steps nothing waits for (a workflow's results), in declared order."""
    used = {up for name in workflow.steps for up in upstream(workflow, name)}
    return [name for name in workflow.steps if name not in used]


def closure(workflow: Workflow, names: set[str]) -> set[str]:
    """``names`` and every step they need, directly or not."""
    needed: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack += upstream(workflow, name)
    return needed
