"""fanflow: machine-learning workflows built on fan-out and fan-in."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Imported on first use, so that worker processes (which import fanflow.runtime and the
# executor) start without loading the spec's dependencies.
_EXPORTS = {
    "SpecError": "fanflow.spec.errors",
    "Workflow": "fanflow.spec.model",
    "load_workflow": "fanflow.spec.loader",
    "flow": "fanflow.api",
    "item": "fanflow.spec.python_api",
    "params": "fanflow.spec.python_api",
    "run": "fanflow.api",
    "run_async": "fanflow.api",
    "runs": "fanflow.api",
    "Run": "fanflow.results",
    "RunFailed": "fanflow.errors",
    "RunNotFound": "fanflow.errors",
    "register_serializer": "fanflow.stores.serializers",
    "progress": "fanflow.reporting",
    "log": "fanflow.reporting",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = globals()[name] = getattr(importlib.import_module(_EXPORTS[name]), name)  # found once
        return value
    raise AttributeError(f"module 'fanflow' has no attribute {name!r}")
