"""Resolving a reference's path (``${ingest.test.x}``, ``${train[*].metrics}``) inside the
value a step produced: one rule for every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fanflow.spec.refs import Ref, whole_ref
from fanflow.vocab.manifest import is_artifact


class ResolveError(Exception):
    """A reference could not be resolved against what the run has produced."""


def descend(value: Any, path: tuple, ref: Ref) -> Any:
    """The part of ``value`` that ``path`` (the fields and indexes after the reference's
    root) names; a ResolveError that says how far the path got."""
    for depth, part in enumerate(path):
        if is_artifact(value):
            raise ResolveError(
                f"{ref}: {_so_far(ref, path, depth)} is a stored {value.get('format')} artifact; "
                f"it has no field {part!r}"
            )
        if isinstance(part, int):
            if not isinstance(value, list) or not -len(value) <= part < len(value):
                raise ResolveError(f"{ref}: {_so_far(ref, path, depth)} has no index {part}")
            value = value[part]
        else:
            if not isinstance(value, dict) or part not in value:
                keys = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
                raise ResolveError(f"{ref}: {_so_far(ref, path, depth)} has no key {part!r} (it has: {keys})")
            value = value[part]
    return value


def fan_out_axes(fan_out: dict[str, list | str], lookup: Callable[[Ref], Any]) -> dict[str, list]:
    """The values of each axis of a fan-out: a list as written, or the list a reference gives
    (``lookup(ref)`` resolves it); a ResolveError when a reference gives something else."""
    axes: dict[str, list] = {}
    for axis, values in fan_out.items():
        if isinstance(values, str):
            ref = whole_ref(values)
            values = lookup(ref)
            if not isinstance(values, list):
                raise ResolveError(f"fan_out.{axis}: expected a list from {ref}, got {type(values).__name__}")
        axes[axis] = values
    return axes


def _so_far(ref: Ref, path: tuple, depth: int) -> str:
    steps = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[:depth])
    return "${" + ref.root + ("[*]" if ref.collect else "") + steps + "}"
