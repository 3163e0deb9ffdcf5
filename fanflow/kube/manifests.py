"""Small pieces every Kubernetes manifest fanflow writes shares: labels, quantities, JSON
that survives Argo's template substitution, key order and YAML output."""

from __future__ import annotations

import json
from typing import Any

import yaml

MANAGED_BY = {"app.kubernetes.io/managed-by": "fanflow"}
RUN_LABEL = "fanflow.dev/run"
STEP_LABEL = "fanflow.dev/step"
SERVER_PORT = 8080  # the port KServe expects a custom predictor to listen on


def quantity(value: float | int, *, memory: bool = False) -> str:
    """A Kubernetes quantity: cores as ``1`` or ``500m``, bytes as ``2Gi``, ``512Mi`` or bytes."""
    if memory:
        for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if value and value % size == 0:
                return f"{int(value // size)}{unit}"
        return str(int(value))
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def resources(cpus: float, gpus: int, memory: int | None) -> dict[str, dict[str, str]] | None:
    """Container requests (and the GPU limit Kubernetes requires) for what a task needs."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if cpus:
        requests["cpu"] = quantity(cpus)
    if memory:
        requests["memory"] = quantity(memory, memory=True)
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out or None


def param_text(value: Any, kind: str) -> str:
    """A parameter's value as the text an Argo parameter holds (``fanflow run -p`` takes the
    same text): strings as they are, booleans as ``true``/``false``, the rest as JSON."""
    if kind == "str" and isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def argo_json(value: Any) -> str:
    """Compact ASCII JSON in which ``{{`` never appears, for text Argo carries (a raw input
    artifact, an output parameter): Argo would read ``{{...}}`` as its own template syntax
    and substitute it. Inside JSON strings ``\\u007b`` decodes to the same ``{``."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("{{", "{\\u007b")


# Keys first in this order (the rest keep theirs), so that manifests read as people write them.
KEY_ORDER = [
    "apiVersion", "kind", "name", "generateName", "namespace", "metadata", "spec",
    "entrypoint", "onExit", "serviceAccountName", "parallelism", "template", "depends", "when",
    "withSequence", "arguments", "templates", "inputs", "outputs", "dag", "steps",
]  # fmt: skip
_RANK = {key: rank for rank, key in enumerate(KEY_ORDER)}


def ordered(value: Any) -> Any:
    """``value`` with every mapping's keys in ``KEY_ORDER``."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: _RANK.get(k, len(KEY_ORDER)))
        return {k: ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def to_yaml(documents: dict | list[dict]) -> str:
    """One YAML document, or several separated by ``---``."""
    docs = documents if isinstance(documents, list) else [documents]
    return "---\n".join(
        yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)
        for doc in docs
    )
