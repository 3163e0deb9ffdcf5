"""The keys of a manifest: the plain JSON that stands for a step's inputs or outputs.

A stored leaf is ``{"$artifact": "sha256:...", "format": ..., ...}``; a float JSON cannot
hold is ``{"$float": "nan"}``; a value JSON has no type for (a datetime, a set, a dataclass)
is ``{"$value": kind, "data": ...}`` with its type recorded; a task that failed where only its output travels (a pod on
Kubernetes) leaves ``{"$failed": error, "task": name}``. User data may not use keys that
start with ``$``, so these never clash with a step's own values.

One key of a step's own output has a meaning: ``run_summary`` (Markdown text, or a Markdown
file), what the step asks the run's summary to show (``fanflow run`` prints it after the run)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

ARTIFACT_KEY = "$artifact"
FLOAT_KEY = "$float"
FAILED_KEY = "$failed"
VALUE_KEY = "$value"
RESERVED_PREFIX = "$"
SUMMARY_KEY = "run_summary"


def is_artifact(value: Any) -> bool:
    return isinstance(value, dict) and ARTIFACT_KEY in value


def is_failure(value: Any) -> bool:
    return isinstance(value, dict) and FAILED_KEY in value


def artifact_refs(manifest: Any) -> Iterator[dict]:
    """Every artifact reference inside a manifest."""
    if isinstance(manifest, dict):
        if ARTIFACT_KEY in manifest:
            yield manifest
        else:
            for value in manifest.values():
                if isinstance(value, dict | list):  # a plain value holds none
                    yield from artifact_refs(value)
    elif isinstance(manifest, list):
        for value in manifest:
            if isinstance(value, dict | list):
                yield from artifact_refs(value)


def map_artifacts(manifest: Any, fn: Callable[[dict, tuple], Any], path: tuple = ()) -> Any:
    """The manifest with each artifact reference replaced by ``fn(reference, path)``; the
    path holds the keys and indexes that lead to it (a typed value's ``data`` left out)."""
    if isinstance(manifest, dict):
        if ARTIFACT_KEY in manifest:
            return fn(manifest, path)
        return {
            key: map_artifacts(value, fn, path if key == "data" and VALUE_KEY in manifest else (*path, key))
            for key, value in manifest.items()
        }
    if isinstance(manifest, list):
        return [map_artifacts(value, fn, (*path, index)) for index, value in enumerate(manifest)]
    return manifest


def artifact_digests(manifest: Any) -> list[str]:
    return [ref[ARTIFACT_KEY] for ref in artifact_refs(manifest)]


def dumps(manifest: Any) -> str:
    """Canonical JSON of a manifest (sorted keys): equal manifests give equal strings."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))
