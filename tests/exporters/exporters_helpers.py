"""Helpers of the exporters' tests: paths, running fanflow's Kubernetes commands as real
processes, and checking manifests against Argo's and Kubernetes' own schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
GOLDEN = HERE / "golden"
IMAGE = "ghcr.io/example/fanflow:0.1.0"
STORE = "s3://fanflow-artifacts/runs"


def run_k8s(*args: str, cwd: Path | str = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m fanflow.cli.kube ARGS`` as a real process."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fanflow.cli.kube", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def update_goldens() -> bool:
    """``FANFLOW_UPDATE_GOLDENS=1 pytest tests/exporters`` rewrites the golden files."""
    return os.environ.get("FANFLOW_UPDATE_GOLDENS", "") not in ("", "0")


def check_argo(manifest: dict) -> None:
    """Validate a Workflow or WorkflowTemplate against Hera's models of Argo's API (every key
    known: the model dumps back to the same document) and against the official Argo Python
    SDK's models, generated from Argo's OpenAPI schema (types of every field)."""
    from hera.workflows import models as m

    model = {"Workflow": m.Workflow, "WorkflowTemplate": m.WorkflowTemplate}[manifest["kind"]]
    parsed = model.model_validate(manifest)
    assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == manifest
    try:
        import argo_workflows
    except ImportError:  # the dev extra installs it; without it Hera's check stands alone
        return
    from argo_workflows.api_client import ApiClient

    if manifest["kind"] == "Workflow":
        from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow import (
            IoArgoprojWorkflowV1alpha1Workflow as Official,
        )
    else:
        from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_template import (
            IoArgoprojWorkflowV1alpha1WorkflowTemplate as Official,
        )

    from argo_workflows.exceptions import ApiTypeError

    document = json.loads(json.dumps(manifest))
    for _ in range(200):
        response = type("Response", (), {"data": json.dumps(document)})()
        try:
            parsed = ApiClient().deserialize(response, (Official,), True)
            break
        except ApiTypeError as exc:
            # The SDK's generator models Kubernetes' int-or-string as a string only.
            if "Required value type is str and passed type was int" not in str(exc):
                raise
            _stringify(document, exc.path_to_item[1:])
    else:
        raise AssertionError("too many int-or-string fields")
    assert argo_workflows is not None and parsed.spec.entrypoint == manifest["spec"]["entrypoint"]


def _stringify(document: dict, path: list) -> None:
    node = document
    keys = [_camel(p) if isinstance(p, str) else p for p in path]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = str(node[keys[-1]])


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def check_kubernetes(document: dict, version: str = "1.33") -> None:
    """Validate a core Kubernetes object against Kubernetes' own strict schemas, as bundled by
    kubernetes-validate (the dev extra installs it; without it this check is left out)."""
    try:
        import kubernetes_validate
    except ImportError:
        return
    kubernetes_validate.validate(document, version, strict=True)
