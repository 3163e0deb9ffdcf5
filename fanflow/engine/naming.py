"""Task names: one rule for every backend (the local runner, Ray, a pod on Kubernetes).

A step that does not fan out has one task named like the step. A fanned-out step has one
task per item of the cartesian product of its axes, in declared order, named
``step[axis=label,...]``: scalars label themselves, records by their ``name``, ``id`` or
``model`` field, anything else by its index. Equal labels for different items get ``#i``
(the item's position) so that names stay unique. A task's log files are named after it
(``file_name``)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any


def labels(values: list) -> list[str]:
    """Short names for the values of one fan-out axis."""
    found = []
    for index, value in enumerate(values):
        if type(value) is int:  # the common case, and what json.dumps would write
            found.append(str(value))
        elif isinstance(value, dict):
            key = next(
                (value[k] for k in ("name", "id", "model") if isinstance(value.get(k), str | int)), None
            )
            found.append(str(key) if key is not None else str(index))
        elif isinstance(value, list):
            found.append(str(index))
        elif isinstance(value, str):
            found.append(value if value and not any(c in value for c in ",=[]") else json.dumps(value))
        else:
            found.append(json.dumps(value))
    return found


def branch_names(step: str, axes: dict[str, list]) -> Iterator[str]:
    """The name of every branch of ``step`` fanned out over ``axes``, in declared order (the
    last axis varies fastest), without building the items."""
    prefixes = [[f"{axis}={label}" for label in labels(values)] for axis, values in axes.items()]
    seen: set[str] = set()
    for position, parts in enumerate(itertools.product(*prefixes)):
        name = f"{step}[{','.join(parts)}]"
        if name in seen:  # equal labels for different values: keep names unique
            name = f"{name[:-1]},#{position}]"
        seen.add(name)
        yield name


def item_at(axes: dict[str, list], position: int) -> dict[str, Any]:
    """The item of the branch at ``position`` (declared order) of a fan-out over ``axes``."""
    if len(axes) == 1:
        for axis, values in axes.items():
            return {axis: values[position]}
    picks = {}
    for axis, values in reversed(axes.items()):
        position, index = divmod(position, len(values))
        picks[axis] = values[index]
    return {axis: picks[axis] for axis in axes}


def branches(step: str, axes: dict[str, list]) -> list[tuple[str, dict[str, Any]]]:
    """(task name, item) for every branch of ``step`` fanned out over ``axes``."""
    return [(name, item_at(axes, i)) for i, name in enumerate(branch_names(step, axes))]


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+-]")


def file_name(task: str) -> str:
    """A task name as a file name: train[model=cnn] -> train@model=cnn."""
    return _UNSAFE.sub("_", task.replace("[", "@").replace("]", ""))[:200]
