"""The workflow spec: what a workflow is, its two front ends (YAML and Python) and validation."""

from __future__ import annotations

import importlib

# Imported on first use: a command that only needs the errors does not load pydantic.
_EXPORTS = {
    "SpecError": "fanflow.spec.errors",
    "SpecIssue": "fanflow.spec.errors",
    "Param": "fanflow.spec.model",
    "Preset": "fanflow.spec.model",
    "Resources": "fanflow.spec.model",
    "Step": "fanflow.spec.model",
    "Workflow": "fanflow.spec.model",
    "apply_preset": "fanflow.spec.presets",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fanflow.spec' has no attribute {name!r}")
