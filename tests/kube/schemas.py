"""Check manifests against the official schemas of the systems fanflow exports to, strictly.

The schema files under ``schemas/`` are copied unchanged from the public repositories:
Argo Workflows' ``api/jsonschema/schema.json`` at each tag named in the file name, and
KServe's ``config/crd/full/serving.kserve.io_inferenceservices.yaml``. Neither sets
``additionalProperties: false``, while ``argo lint``/``argo submit`` and the API server's
strict field validation refuse unknown fields; so the check adds it to every object schema
that lists its properties (keeping maps, and KServe's ``x-kubernetes-preserve-unknown-fields``),
and reads KServe's ``x-kubernetes-int-or-string`` as integer or string. Core Kubernetes
objects are checked with kubernetes-validate's strict schemas.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
ARGO_SCHEMAS = {
    "3.4": "argo-schema-v3.4.18.json",
    "3.5": "argo-schema-v3.5.15.json",
    "3.6": "argo-schema-v3.6.19.json",
    "3.7": "argo-schema-v3.7.18.json",
    "4.1": "argo-schema-v4.1.2.json",
}
KSERVE_CRD = "kserve-inferenceservices-crd.yaml"
KUBERNETES = "1.33"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def strict(schema: Any) -> Any:
    """``schema`` with unknown keys refused wherever an object lists its properties."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache
def _argo(version: str) -> dict:
    return strict(json.loads((SCHEMAS / ARGO_SCHEMAS[version]).read_text()))


@functools.lru_cache
def _argo_validator(version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = _argo(version)
    root = {
        "definitions": schema["definitions"],
        "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}",
    }
    return jsonschema.Draft7Validator(root)


def argo_errors(manifest: dict, version: str) -> list[str]:
    """Every place where ``manifest`` (a Workflow or WorkflowTemplate) breaks Argo's schema."""
    validator = _argo_validator(version, manifest.get("kind", "Workflow"))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def check_argo(manifest: dict, versions=tuple(ARGO_SCHEMAS)) -> None:
    for version in versions:
        errors = argo_errors(manifest, version)
        assert not errors, f"Argo {version} schema: " + "\n".join(errors[:20])


@functools.lru_cache
def _kserve_validator() -> jsonschema.protocols.Validator:
    try:
        loader = yaml.CSafeLoader
    except AttributeError:  # PyYAML without its C extension
        loader = yaml.SafeLoader
    crd = yaml.load((SCHEMAS / KSERVE_CRD).read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"$ref": f"#/definitions/{OBJECT_META}"}
    schema["definitions"] = _argo("4.1")["definitions"]  # Kubernetes' ObjectMeta, strictly
    return jsonschema.Draft7Validator(strict(schema))


def kserve_errors(manifest: dict) -> list[str]:
    validator = _kserve_validator()
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def check_inference_service(manifest: dict) -> None:
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    errors = kserve_errors(manifest)
    assert not errors, "KServe CRD schema: " + "\n".join(errors[:20])


def check_kubernetes(document: dict) -> None:
    """A core Kubernetes object (Deployment, Service, Role...) against Kubernetes' own strict
    schemas, as kubernetes-validate bundles them."""
    import kubernetes_validate

    kubernetes_validate.validate(document, KUBERNETES, strict=True)
