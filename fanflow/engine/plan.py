"""A workflow made ready to run: parameters resolved, dependencies worked out once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from fanflow.spec import graph
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Resources, Step, Workflow


@dataclass
class StepPlan:
    name: str
    step: Step
    index: int  # declared order
    upstream: list[str]  # every step this one waits for
    fan_in: list[str]  # fanned-out upstream steps whose branches this one collects
    downstream: list[str] = field(default_factory=list)
    policy: str = "fail_fast"
    resources: Resources = field(init=False)  # what each task holds while it runs
    service: bool = field(init=False)

    def __post_init__(self) -> None:
        self.resources = self.step.effective_resources
        self.service = self.step.kind == "service"

    @property
    def quorum(self) -> int | float | None:
        return self.step.min_success


@dataclass
class Plan:
    workflow: Workflow
    params: dict[str, Any]
    steps: dict[str, StepPlan]

    @classmethod
    def build(cls, workflow: Workflow, overrides: dict[str, Any] | None = None) -> Plan:
        params = resolve_params(workflow, overrides or {})
        steps: dict[str, StepPlan] = {}
        for index, (name, step) in enumerate(workflow.steps.items()):
            steps[name] = StepPlan(
                name=name,
                step=step,
                index=index,
                upstream=graph.upstream(workflow, name),
                fan_in=graph.fans_in(workflow, name),
                policy=workflow.policy(name),
            )
        for plan in steps.values():
            for up in plan.upstream:
                steps[up].downstream.append(plan.name)
        return cls(workflow, params, steps)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def resolve_params(workflow: Workflow, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by the caller's values (text from the command line is converted
    to the declared type). Unknown or missing parameters are errors."""
    issues = []
    for name in overrides:
        if name not in workflow.params:
            known = ", ".join(workflow.params) or "none"
            issues.append(
                SpecIssue(
                    f"unknown parameter {name!r} (known: {known})",
                    field=f"params.{name}",
                    file=workflow.source,
                )
            )
    values: dict[str, Any] = {}
    for name, param in workflow.params.items():
        if name in overrides:
            try:
                values[name] = convert(overrides[name], param.type)
            except ValueError as exc:
                issues.append(SpecIssue(str(exc), field=f"params.{name}", file=workflow.source))
                continue
            if param.choices is not None and values[name] not in param.choices:
                issues.append(
                    SpecIssue(
                        f"expected one of {param.choices}, got {values[name]!r}",
                        field=f"params.{name}",
                        file=workflow.source,
                    )
                )
        elif param.required:
            issues.append(
                SpecIssue(
                    f"parameter {name!r} is required: pass -p {name}=VALUE",
                    field=f"params.{name}",
                    file=workflow.source,
                )
            )
        else:
            values[name] = param.default
    if issues:
        raise SpecError(issues)
    return values


def convert(value: Any, kind: str) -> Any:
    if not isinstance(value, str):
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    text = value.strip()
    try:
        if kind == "str":
            return value
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        parsed = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        raise ValueError(f"expected a value of type {kind}, got {value!r}") from None
    if kind == "list" and not isinstance(parsed, list):
        raise ValueError(f"expected a list such as [a, b], got {value!r}")
    if kind == "dict" and not isinstance(parsed, dict):
        raise ValueError(f"expected a mapping such as {{a: 1}}, got {value!r}")
    return parsed


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
