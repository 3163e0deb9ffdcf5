"""Every exported manifest against the official schemas of each supported Argo version,
strictly (an unknown key is an error, as ``argo lint`` and ``argo submit`` decode)."""

from __future__ import annotations

import copy

import pytest
import yaml

from fanflow.kube import render
from fanflow.spec.loader import load_workflow
from tests.kube.helpers import EXAMPLES, FANOUT, IMAGE, REFERENCE, STORE
from tests.kube.schemas import ARGO_SCHEMAS, argo_errors, check_argo

WORKFLOWS = [
    FANOUT / "workflow.yaml",
    REFERENCE,
    *(EXAMPLES / f"{name}.yaml" for name in ("quorum_serve", "train_select", "values", "wide", "doomed")),
]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem if p != REFERENCE else "reference")
def test_every_exported_workflow_passes_argos_schema_on_every_supported_version(path):
    workflow = load_workflow(path, check_imports=False)
    for template in (False, True):
        manifest = render.export(workflow, image=IMAGE, artifacts=STORE, template=template, namespace="ml",
                                 service_account="runner")  # fmt: skip
        assert manifest["kind"] == ("WorkflowTemplate" if template else "Workflow")
        check_argo(manifest)


def test_a_manifest_for_argo_3_7_passes_the_schemas_of_3_7_and_later():
    workflow = load_workflow(EXAMPLES / "quorum_serve.yaml", check_imports=False)
    workflow.steps["train"] = workflow.steps["train"].model_copy(update={"retries": 9})
    with pytest.raises(Exception, match="retry_backoff"):
        render.export(workflow, image=IMAGE, artifacts=STORE)
    manifest = render.export(workflow, image=IMAGE, artifacts=STORE, argo_version=(3, 7))
    assert "cap" in yaml.safe_dump(manifest)
    check_argo(manifest, versions=("3.7", "4.1"))
    assert any("'cap' was unexpected" in e for e in argo_errors(manifest, "3.6"))


def test_the_check_refuses_unknown_keys_and_wrong_types():
    manifest = render.export(load_workflow(FANOUT / "workflow.yaml"), image=IMAGE, artifacts=STORE)
    typo = copy.deepcopy(manifest)
    typo["spec"]["templates"][1]["container"]["imagee"] = "x"
    retry = copy.deepcopy(manifest)
    template = next(t for t in retry["spec"]["templates"] if "retryStrategy" in t)
    template["retryStrategy"]["limit"] = 1  # the published schema types IntOrString as a string
    for version in ARGO_SCHEMAS:
        assert any("'imagee' was unexpected" in e for e in argo_errors(typo, version))
        assert any("1 is not of type 'string'" in e for e in argo_errors(retry, version))
