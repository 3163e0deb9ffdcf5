"""Sub-workflows: a step that ``uses`` another workflow (a file, or one installed under a name)
is replaced, when the workflow is loaded, by that workflow's steps, renamed ``STEP/inner``, with
its parameters bound from the step's ``with``. The step's own name then stands for the
sub-workflow's ``outputs``, so downstream steps read ``${STEP.field}`` as from any step.

Inlining (rather than running a nested engine) keeps every inner task visible to the one
scheduler: retries, caching, resume, limits and the live view all work across the boundary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fanflow.spec.errors import SpecError
from fanflow.spec.graph import leaves, step_refs
from fanflow.spec.positions import Positions
from fanflow.spec.refs import PARAMS, Ref, parse_ref

OUTPUTS_FUNCTION = "fanflow.spec.subflows:outputs"
WORKFLOW_PREFIX = "workflow:"
SUBFLOW_KEYS = {"uses", "with", "needs", "when", "description"}
_REF = re.compile(r"(?<!\$)\$\{([^{}]*)\}")


def outputs(outputs: Any) -> Any:
    """The step that stands for a sub-workflow: its outputs, passed through unchanged. The
    engine completes it without running it, so stored arrays are not copied."""
    return outputs


def is_workflow_reference(uses: Any) -> bool:
    if not isinstance(uses, str):
        return False
    return (
        uses.startswith(WORKFLOW_PREFIX)
        or uses.endswith((".yaml", ".yml", ".py"))
        or uses.startswith(("./", "../", "/"))
    )


def resolve_reference(uses: str, source: str | None) -> Path:
    """The file a ``uses`` names: a path relative to the workflow's folder, or an installed
    workflow (``workflow:NAME``)."""
    if uses.startswith(WORKFLOW_PREFIX):
        from fanflow.spec.registry import find_installed

        return find_installed(uses.removeprefix(WORKFLOW_PREFIX))
    base = Path(source).resolve().parent if source else Path.cwd()
    return (base / uses).resolve()


def inline(
    data: dict, source: str | None, positions: Positions, *, check_imports: bool, stack: tuple[str, ...] = ()
) -> tuple[dict, list[str]]:
    """``data`` with every sub-workflow step replaced by the sub-workflow's steps, and the
    folders the sub-workflows' own modules are imported from."""
    steps = data.get("steps")
    if not isinstance(steps, dict) or not any(
        isinstance(s, dict) and is_workflow_reference(s.get("uses")) for s in steps.values()
    ):
        return data, []
    folders: list[str] = []
    new_steps: dict[str, Any] = {}
    for name, step in steps.items():
        if not (isinstance(step, dict) and is_workflow_reference(step.get("uses"))):
            new_steps[name] = step
            continue
        where = ("steps", name)
        extra = sorted(set(step) - SUBFLOW_KEYS)
        if extra:
            raise SpecError(
                positions.issue(
                    f"a step that uses a workflow takes only {', '.join(sorted(SUBFLOW_KEYS))}; "
                    f"not {', '.join(extra)} (set them inside the sub-workflow)",
                    (*where, extra[0]),
                )
            )
        expanded, child_folders = _expand(name, step, source, positions, check_imports, stack)
        for inner_name, inner in expanded.items():
            new_steps[inner_name] = inner
            positions.table.setdefault(("steps", inner_name), positions.locate(where))
        folders += [f for f in child_folders if f not in folders]
    return {**data, "steps": new_steps}, folders


def _expand(
    name: str,
    step: dict,
    source: str | None,
    positions: Positions,
    check_imports: bool,
    stack: tuple[str, ...],
) -> tuple[dict[str, dict], list[str]]:
    from fanflow.spec.loader import load_workflow

    where = ("steps", name, "uses")
    try:
        path = resolve_reference(step["uses"], source)
    except LookupError as exc:
        raise SpecError(positions.issue(str(exc), where)) from None
    if not path.is_file():
        raise SpecError(positions.issue(f"no workflow file {path}", where))
    if str(path) in stack:
        chain = " -> ".join([*stack, str(path)])
        raise SpecError(positions.issue(f"a workflow cannot use itself: {chain}", where))
    child = load_workflow(path, check_imports=check_imports, _stack=(*stack, str(path)))
    bound = _bind(child, step.get("with") or {}, name, positions)
    prefix = f"{name}/"
    inner_steps: dict[str, dict] = {}
    for inner_name, inner in child.steps.items():
        raw = inner.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        raw = _rewrite(raw, prefix, set(child.steps), bound)
        raw["needs"] = [prefix + n for n in inner.needs]
        if not raw["needs"]:
            del raw["needs"]
        is_root = not _mentions_steps(inner, child)
        if is_root:
            if step.get("needs"):
                raw["needs"] = list(step["needs"])
            if step.get("when") is not None:
                raw["when"] = _combine(step["when"], raw.get("when"))
        inner_steps[prefix + inner_name] = raw
    declared = child.outputs or {
        leaf: f"${{{leaf}[*]}}" if child.steps[leaf].fan_out else f"${{{leaf}}}" for leaf in leaves(child)
    }
    inner_steps[name] = {
        "uses": OUTPUTS_FUNCTION,
        "executor": "thread",
        "with": {"outputs": _rewrite(declared, prefix, set(child.steps), bound)},
        "description": step.get("description") or f"the outputs of {step['uses']}",
    }
    return inner_steps, child.import_paths


def _bind(child, values: dict, name: str, positions: Positions) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise SpecError(
            positions.issue("expected a mapping of the sub-workflow's parameters", ("steps", name, "with"))
        )
    unknown = sorted(set(values) - set(child.params))
    if unknown:
        known = ", ".join(child.params) or "none"
        raise SpecError(
            positions.issue(
                f"the workflow {child.name!r} has no parameter {unknown[0]!r} (parameters: {known})",
                ("steps", name, "with", unknown[0]),
            )
        )
    bound = {}
    for param, spec in child.params.items():
        if param in values:
            bound[param] = values[param]
        elif spec.required:
            raise SpecError(
                positions.issue(
                    f"the workflow {child.name!r} needs parameter {param!r}", ("steps", name, "with")
                )
            )
        else:
            bound[param] = spec.default
    return bound


def _rewrite(value: Any, prefix: str, inner: set[str], bound: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _rewrite(v, prefix, inner, bound) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, prefix, inner, bound) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _REF.fullmatch(value.strip())
    if whole:
        ref = parse_ref(whole.group(1))
        if ref.root == PARAMS and ref.path:
            return _param_value(bound[ref.path[0]], ref)
    return _REF.sub(lambda m: _rewrite_one(parse_ref(m.group(1)), prefix, inner, bound), value)


def _rewrite_one(ref: Ref, prefix: str, inner: set[str], bound: dict[str, Any]) -> str:
    if ref.root in inner:
        return str(Ref(prefix + ref.root, ref.collect, ref.path))
    if ref.root == PARAMS and ref.path:
        value = _param_value(bound[ref.path[0]], ref)
        return value if isinstance(value, str) else _text(value)
    return str(ref)


def _param_value(value: Any, ref: Ref) -> Any:
    """The bound value of ``${params.p.rest}``: a parent's reference gains ``.rest``; a literal
    is looked into."""
    rest = ref.path[1:]
    if isinstance(value, str) and _REF.fullmatch(value.strip()):
        parent = parse_ref(_REF.fullmatch(value.strip()).group(1))
        return str(Ref(parent.root, parent.collect, parent.path + tuple(rest)))
    for part in rest:
        value = value[part]
    return value


def _text(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, dict | list) or value is None else str(value)


def _mentions_steps(step, child) -> bool:
    return bool(step.needs) or any(ref.is_step for ref, _ in step_refs(step))


def _combine(outer: Any, inner: Any) -> Any:
    if inner is None:
        return outer
    if outer is True:
        return inner
    if outer is False or inner is False:
        return False
    return f"({outer}) and ({inner})"
