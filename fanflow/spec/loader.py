"""Load a workflow from a YAML file, a Python file or a plain dict into a validated Workflow."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pydantic

from fanflow.spec import subflows, validate
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.model import Param, Preset, Resources, Step, Workflow
from fanflow.spec.positions import Positions, load_yaml_with_positions

YAML_SUFFIXES = (".yaml", ".yml")
MAX_BYTES = 16 * 2**20  # far more than any workflow needs, and still read in seconds


def load_workflow(path: str | Path, *, check_imports: bool = True, _stack: tuple[str, ...] = ()) -> Workflow:
    """Read and validate a workflow file (YAML, or Python defining a ``fanflow.Workflow``)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in (*YAML_SUFFIXES, ".py"))[:5]
        hint = f" (it holds {', '.join(found)})" if found else ""
        raise SpecError(SpecIssue(f"is a folder, not a workflow file: give a .yaml or .py file{hint}",
                                  file=str(path)))
    if not path.is_file():
        raise SpecError(SpecIssue("no such workflow file (expected a .yaml or .py file)", file=str(path)))
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SpecError(SpecIssue(f"the file is {size / 2**20:.1f} MiB; a workflow file may be at most "
                                  f"{MAX_BYTES // 2**20} MiB (keep large data in files that steps read)",
                                  file=str(path)))
    if path.suffix == ".py":
        from fanflow.spec.python_api import load_python_workflow

        return load_python_workflow(path, check_imports=check_imports, _stack=_stack)
    if path.suffix not in YAML_SUFFIXES:
        raise SpecError(
            SpecIssue(
                f"unknown workflow file type {path.suffix!r} (expected .yaml, .yml or .py)", file=str(path)
            )
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(SpecIssue(f"cannot read the file: {exc}", file=str(path))) from None
    data, positions = load_yaml_with_positions(text, str(path))
    return workflow_from_dict(data, source=str(path), positions=positions, check_imports=check_imports,
                              _stack=_stack or (str(path.resolve()),))


def workflow_from_dict(data: Any, *, source: str | None = None, positions: Positions | None = None,
                       check_imports: bool = True, import_paths: list[str] = (),
                       _stack: tuple[str, ...] = ()) -> Workflow:
    positions = positions or Positions(file=source)
    if not isinstance(data, dict):
        raise SpecError(positions.issue(f"expected a mapping with name and steps, got {type(data).__name__}"))
    data, folders = subflows.inline(data, source, positions, check_imports=check_imports, stack=_stack)
    own = [str(Path(source).resolve().parent)] if source else list(import_paths)
    try:
        workflow = Workflow.model_validate({**data, "source": source,
                                            "import_paths": own + [f for f in folders if f not in own]})
    except pydantic.ValidationError as exc:
        raise SpecError(_issues(exc, data, positions)) from None
    validate.check(workflow, positions, check_imports=check_imports)
    return workflow


_MODEL_AT = {("steps", "*"): Step, ("params", "*"): Param, ("presets", "*"): Preset,
             ("steps", "*", "resources"): Resources}


def _issues(exc: pydantic.ValidationError, data: Any, positions: Positions) -> list[SpecIssue]:
    errors = [(error, _data_path(error["loc"], data)) for error in exc.errors()]
    unknown = {(path[:-1], path[-1]) for error, path in errors if error["type"] == "extra_forbidden"}
    issues, seen = [], set()
    for error, path in errors:
        if path in seen:
            continue  # a union reports once per member; the first says enough
        if error["type"] == "missing" and _misspelt(path, unknown):
            continue  # `stepz:` explains the missing `steps:`
        seen.add(path)
        issues.append(positions.issue(_message(error, path), path))
    return issues


def _misspelt(path: tuple, unknown: set) -> bool:
    return any(
        parent == path[:-1] and difflib.get_close_matches(str(key), [str(path[-1])], cutoff=0.6)
        for parent, key in unknown
    )


def _data_path(loc: tuple, data: Any) -> tuple:
    """The part of pydantic's location that exists in the document (it appends type tags)."""
    path, node = [], data
    for part in loc:
        if part == "[key]":  # pydantic's mark for an error in a mapping's key: the key is the place
            break
        if isinstance(node, dict) and part not in node:  # pydantic names a key 1 or null as text
            part = next((key for key in node if str(key) == part), part)
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        elif node is not None and not isinstance(node, dict | list):
            break
        else:
            path.append(part)
            break
        path.append(part)
    return tuple(path)


def _message(error: dict, path: tuple) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        key = path[-1]
        return f"unknown key {key!r}{_suggest_field(key, path)}"
    if kind == "missing":
        return f"missing required key {path[-1]!r}" if path else "missing required key"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and path and path[-1] == "uses":
        return f"expected 'package.module:function', got {value!r}"
    if kind == "literal_error":
        return f"{message[0].lower()}{message[1:]}, got {value!r}"
    if not isinstance(value, dict | list) and kind not in ("value_error",):
        return f"{message[0].lower()}{message[1:]}, got {value!r}"
    return message[0].lower() + message[1:]


def _suggest_field(key: str, path: tuple) -> str:
    model = Workflow
    shape = tuple("*" if i % 2 else p for i, p in enumerate(path[:-1]))
    if len(path) >= 3 and path[0] in ("steps", "params", "presets"):
        shape = (path[0], "*", *path[2:-1])
    model = _MODEL_AT.get(shape, Workflow if len(path) == 1 else None)
    if model is None:
        return ""
    names = [f.alias or n for n, f in model.model_fields.items() if n not in ("source", "import_paths")]
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if model is Param:
        return (f" in a parameter's declaration (expected one of: {', '.join(names)}; a mapping as the "
                "default is written {type: dict, default: {...}})")
    return f" (expected one of: {', '.join(names)})"
