"""Small pieces the Kubernetes exporters share: object names, quantities, JSON that survives
Argo's and Kubernetes' own substitutions, and YAML output."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import yaml

MANAGED_BY = {"app.kubernetes.io/managed-by": "fanflow"}
RUN_LABEL = "fanflow.dev/run"
STEP_LABEL = "fanflow.dev/step"
SERVER_PORT = 8080  # the port KServe expects a custom predictor to listen on


def dns_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label made from ``text`` (lower case, letters, digits and '-'); a name cut
    to fit ``limit`` ends with a short hash of the whole, so that different names stay apart."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if not name[0].isalpha():
        name = "x-" + name
    if len(name) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        name = name[: limit - 7].rstrip("-") + "-" + digest
    return name


def label_value(text: str) -> str:
    """A Kubernetes label value made from ``text`` (letters, digits, '-', '_' and '.')."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return value[:63].rstrip("-_.")


def argo_name(name: str) -> str:
    """A fanflow step name as an Argo task or template name (letters, digits and '-')."""
    text = name.replace("_", "-").replace("/", "-")
    return text if text[0].isalpha() else "s" + text


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


_BRACES = re.compile(r"\{(?=\{)")


def safe_json(value: Any) -> str:
    """Compact JSON in which no '$' and no '{{' appear as such.

    Argo reads ``{{...}}`` as its own template syntax, and Kubernetes rewrites ``$$`` and
    ``$(NAME)`` in a container's arguments; both can only occur inside JSON strings, where
    ``\\u0024`` and ``\\u007b`` decode to the same characters."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=False)
    return _BRACES.sub(r"\\u007b", text.replace("$", "\\u0024"))


def readable_json(value: Any) -> str:
    """Compact JSON that keeps ``${...}`` readable: only what Argo or Kubernetes would rewrite
    is escaped (``{{`` always; ``$`` before ``$`` or ``(``, doubled as Kubernetes expects)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = _BRACES.sub(r"\\u007b", text)
    return re.sub(r"\$(?=[$(])", "$$", text)


# Keys first in this order (the rest keep theirs), so that manifests read as people write them.
KEY_ORDER = [
    "apiVersion", "kind", "name", "generateName", "namespace", "metadata", "spec",
    "entrypoint", "onExit", "parallelism", "template", "dependencies", "when", "withItems",
    "withParam", "continueOn", "arguments", "templates", "inputs", "outputs", "dag", "steps",
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
