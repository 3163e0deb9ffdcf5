"""What a workflow's service account may do (``fanflow export argo --service-account``).

Every pod of an Argo workflow runs as its service account. Argo's executor (3.4 and later)
reports a pod's outputs as ``workflowtaskresults``; a workflow with service steps also
creates, watches and deletes its ``inferenceservices`` (the resource templates and the exit
handler run as the same account). Nothing more: the artifact store's credentials come from
a Secret (``--secret``) or the cloud's workload identity, not from Kubernetes RBAC.
"""

from __future__ import annotations

from typing import Any

from fanflow.kube.manifests import MANAGED_BY

EXECUTOR_RULE = {
    "apiGroups": ["argoproj.io"],
    "resources": ["workflowtaskresults"],
    "verbs": ["create", "patch"],
}
SERVICES_RULE = {
    "apiGroups": ["serving.kserve.io"],
    "resources": ["inferenceservices"],
    "verbs": ["create", "get", "list", "watch", "patch", "delete"],
}


def documents(name: str, namespace: str | None, *, services: bool) -> list[dict[str, Any]]:
    """A ServiceAccount ``name``, a Role with what the workflow needs, and the RoleBinding
    that grants it (in ``namespace``, or the one they are applied in)."""
    metadata: dict[str, Any] = {"name": name, "labels": dict(MANAGED_BY)}
    if namespace:
        metadata["namespace"] = namespace
    rules = [EXECUTOR_RULE, SERVICES_RULE] if services else [EXECUTOR_RULE]
    subject = {"kind": "ServiceAccount", "name": name}
    if namespace:
        subject["namespace"] = namespace
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject],
        },
    ]
