"""The workflow spec's data model: one validated object whichever front end wrote it."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fanflow.vocab.units import parse_duration, parse_size

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
STEP_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*(/[A-Za-z_][A-Za-z0-9_-]*)*$"  # outer/inner: sub-workflows
USES_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _memory(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_duration, json_schema_input_type=float | str), Field(ge=0)]
Memory = Annotated[int, BeforeValidator(_memory, json_schema_input_type=int | str), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Resources(_Strict):
    """What one task needs of the machine it runs on; admission holds running tasks within
    the executor's capacity."""

    cpus: float = Field(1.0, ge=0, description="Cores; also the torch/BLAS threads the task gets.")
    gpus: int = Field(0, ge=0, description="Whole GPUs.")
    memory: Memory | None = Field(None, description="Bytes, or a size such as 512Mi or 2Gi.")


ParamType = Literal["str", "int", "float", "bool", "list", "dict", "any"]
PARAM_KEYS = ("type", "default", "required", "description", "choices")


class Param(_Strict):
    """A workflow parameter: typed, with an optional default and a description."""

    type: ParamType = "any"
    default: Any = None
    required: bool = False
    description: str = ""
    choices: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `top_k: 2` is shorthand for `top_k: {type: int, default: 2}`. A mapping that uses
        # any declaration key (or only near-misses of them) is a declaration, checked
        # strictly: `{type: int, defualt: 3}` is an error, not a mapping-valued parameter.
        if isinstance(data, dict) and is_declaration(data):
            data = dict(data)
            if "default" not in data:
                data.setdefault("required", True)
            if "type" not in data and "default" in data:
                data["type"] = type_name(data["default"])
            return data
        return {"type": type_name(data), "default": data}


def is_declaration(mapping: dict) -> bool:
    keys = [str(k) for k in mapping]
    return bool(keys) and (
        any(k in PARAM_KEYS for k in keys)
        or all(difflib.get_close_matches(k, PARAM_KEYS, n=1, cutoff=0.75) for k in keys)
    )


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    for python_type, name in ((int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict")):
        if isinstance(value, python_type):
            return name
    return "any"


FailurePolicy = Literal["fail_fast", "continue"]


def _step_name(name: str) -> str:
    if not re.match(STEP_NAME_PATTERN, name) or name in ("params", "item"):
        raise ValueError(
            f"step name {name!r} must be a name (letters, digits, _ and -), not 'params' or 'item'"
        )
    return name


def _name_of(kind: str):
    def check(name: str) -> str:
        if not re.match(NAME_PATTERN, name):
            raise ValueError(f"{kind} name {name!r} must be a name (letters, digits, _ and -)")
        return name

    return check


# Checked as the keys they are, so that an error points at the step's (parameter's) own line.
StepName = Annotated[str, AfterValidator(_step_name)]
ParamName = Annotated[str, AfterValidator(_name_of("parameter"))]
PresetName = Annotated[str, AfterValidator(_name_of("preset"))]


class Preset(_Strict):
    """A named set of parameter values (``fanflow run FILE --preset NAME``): they replace the
    parameters' defaults, and values given with -p still override them."""

    description: str = Field("", description="What the preset is for; printed when a run uses it.")
    params: dict[ParamName, Any] = Field(
        default_factory=dict, description="Values of the workflow's own parameters, by name."
    )


class Step(_Strict):
    """One node of the workflow. A step with ``fan_out`` runs as one task per item."""

    uses: str = Field(
        description="The function the step runs, as 'package.module:function'.",
        pattern=USES_PATTERN,
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="Keyword arguments; values may hold ${...} references.",
    )
    fan_out: dict[str, list[Any] | str] | None = Field(
        None,
        description="Named axes, each a list of values or a ${...} reference to a list known at run time. "
        "Several axes make a grid (their cartesian product); one task runs per item.",
    )
    needs: list[str] = Field(
        default_factory=list,
        description="Steps that must finish first, beyond those the step's references already imply.",
    )
    when: bool | str | None = Field(
        None,
        description="A condition; when false the step and what "
        "depends on it are skipped. Example: ${params.serve} and ${params.k} > 1",
    )
    kind: Literal["task", "service"] = Field(
        "task",
        description="'service' starts a long-running "
        "process (a model server) that stays up while the run needs it.",
    )
    executor: Literal["process", "thread"] = Field(
        "process", description="'process' for CPU-bound work (real parallelism); 'thread' for light steps."
    )
    retries: int = Field(0, ge=0, description="Extra attempts after a failure.")
    retry_backoff: Duration = Field(1.0, description="Wait before the first retry; doubles each time.")
    timeout: Duration | None = Field(None, gt=0, description="Seconds (or 30s, 5m) before a task is killed.")
    parallelism: int | None = Field(None, ge=1, description="At most this many of the step's tasks at once.")
    resources: Resources | None = None
    min_success: int | float | None = Field(
        None, description="Quorum for a fan-in: a count of branches, or a ratio in (0, 1]."
    )
    wait: Literal["all", "quorum"] = Field(
        "all",
        description="A fan-in with min_success waits for every branch ('all') or starts as soon "
        "as the quorum has succeeded ('quorum').",
    )
    on_failure: FailurePolicy | None = Field(None, description="Overrides the workflow's failure policy.")
    cache: bool = Field(True, description="Reuse an earlier identical task's outputs.")
    restarts: int = Field(3, ge=0, description="For services: restarts allowed if it dies.")
    ready_timeout: Duration = Field(120.0, gt=0, description="For services: seconds to become ready.")
    description: str = ""

    @field_validator("min_success")
    @classmethod
    def _quorum(cls, value):
        if value is None:
            return value
        if isinstance(value, bool):
            raise ValueError("expected a count (an integer ≥ 1) or a ratio in (0, 1]")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a count must be at least 1, got {value}")
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError(f"a ratio must be in (0, 1], got {value}")
        return value

    @field_validator("fan_out")
    @classmethod
    def _axes(cls, value):
        if value is None:
            return value
        if not value:
            raise ValueError("expected at least one axis, e.g. {model: [a, b]}")
        for axis in value:
            if not re.match(NAME_PATTERN, axis):
                raise ValueError(f"axis name {axis!r} must be a name (letters, digits, _ and -)")
        return value

    @property
    def effective_resources(self) -> Resources:
        if self.resources is not None:
            return self.resources
        # A service mostly waits for requests: it holds no core unless it asks for one.
        return Resources(cpus=0) if self.kind == "service" else Resources()


class Workflow(_Strict):
    """A named set of steps and parameters."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    version: str | None = None
    params: dict[ParamName, Param] = Field(default_factory=dict)
    presets: dict[PresetName, Preset] = Field(
        default_factory=dict,
        description="Named parameter sets, e.g. {quick: {description: ..., params: {epochs: 1}}}.",
    )
    steps: dict[StepName, Step] = Field(description="Steps by name, in the order they are declared.")
    outputs: dict[str, Any] | None = Field(
        None,
        description="What the workflow gives a workflow that uses it, e.g. {model: ${select}}; "
        "by default the outputs of its last steps.",
    )
    parallelism: int | None = Field(None, ge=1, description="At most this many tasks at once.")
    on_failure: FailurePolicy = "fail_fast"
    source: str | None = Field(None, exclude=True, description="The file the workflow came from.")
    import_paths: list[str] = Field(
        default_factory=list, exclude=True, description="Folders step modules are imported from."
    )
    code: dict[str, str] = Field(
        default_factory=dict,
        exclude=True,
        description="Source shipped with the workflow by digest: steps defined in a notebook or a "
        "__main__ script, which workers cannot import by name.",
    )

    @field_validator("steps")
    @classmethod
    def _some_steps(cls, steps):
        if not steps:
            raise ValueError("a workflow needs at least one step")
        return steps

    def policy(self, step: str) -> FailurePolicy:
        return self.steps[step].on_failure or self.on_failure
