"""Task names: one rule for every backend (the local runner, Ray, a pod on Kubernetes).

A step that does not fan out has one task named like the step. A fanned-out step has one
task per item of the cartesian product of its axes, in declared order, named
``step[axis=label,...]``: scalars label themselves, records by their ``name``, ``id`` or
``model`` field, anything else by its index. Equal labels for different items get ``#i``
(the item's position) so that names stay unique."""

from __future__ import annotations

import itertools
import json
from typing import Any


def labels(values: list) -> list[str]:
    """Short names for the values of one fan-out axis."""
    found = []
    for index, value in enumerate(values):
        if isinstance(value, dict):
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


def branches(step: str, axes: dict[str, list]) -> list[tuple[str, dict[str, Any]]]:
    """(task name, item) for every branch of ``step`` fanned out over ``axes``."""
    axis_labels = {axis: labels(values) for axis, values in axes.items()}
    found: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for combo in itertools.product(*(range(len(values)) for values in axes.values())):
        picks = list(zip(axes, combo, strict=True))
        item = {axis: axes[axis][i] for axis, i in picks}
        name = f"{step}[{','.join(f'{axis}={axis_labels[axis][i]}' for axis, i in picks)}]"
        if name in seen:  # equal labels for different values: keep names unique
            name = f"{name[:-1]},#{len(found)}]"
        seen.add(name)
        found.append((name, item))
    return found
