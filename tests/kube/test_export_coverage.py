"""Every field of the spec either translates to Argo, is refused by name, or is declared not
translated (with the reason in ``STEP_FIELDS`` / ``WORKFLOW_FIELDS`` and the docs). A field
added to the spec later fails these tests until someone decides what becomes of it."""

from __future__ import annotations

import pytest

from fanflow.kube import kserve, plan, render
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import workflow_from_dict
from fanflow.spec.model import Step, Workflow
from fanflow.vocab.imports import shipped_module
from tests.kube.helpers import IMAGE, ROOT, STORE

BASE = {
    "a": {"uses": "m:f"},
    "b": {"uses": "m:g", "fan_out": {"x": [1, 2]}, "with": {"v": "${item.x}", "a": "${a}"}},
    "c": {"uses": "m:h", "with": {"all": "${b[*]}"}},
}
SERVICE = {"uses": kserve.MODEL_SERVER, "kind": "service", "with": {"model": "${a}"}}

# field: (the step it is set on, base settings of that step, the setting, what must happen[,
# other steps replaced])
STEP_CASES: dict[str, list[tuple]] = {
    "uses": [
        ("c", {}, {"uses": "m:other"}, "recorded"),
        ("c", SERVICE, {"uses": "m:serve"}, "refused"),
        ("c", {}, {"uses": shipped_module("sha256:" + "0" * 64) + ":h"}, "refused"),
    ],
    "with_": [
        ("c", {}, {"with": {"all": "${b[*]}", "k": 1}}, "recorded"),
        ("c", SERVICE, {"with": {"x": 1}}, "refused"),
    ],
    "fan_out": [
        ("b", {}, {"fan_out": {"x": [1, 2, 3]}}, "changes"),
        ("c", {}, {"fan_out": {"x": "${b[*]}"}}, "refused"),
    ],
    "needs": [("c", {}, {"needs": ["a"]}, "changes")],
    "when": [
        ("c", {}, {"when": "${params.p} > 1"}, "changes"),
        ("c", {}, {"when": "${a} == 1"}, "changes"),
        ("c", {}, {"when": "${b[*]} == []"}, "refused"),
    ],
    "kind": [("c", {"uses": kserve.MODEL_SERVER, "with": {"model": "${a}"}}, {"kind": "service"}, "changes")],
    "executor": [("c", {}, {"executor": "thread"}, "ignored")],
    "retries": [("c", {}, {"retries": 2}, "changes"), ("c", SERVICE, {"retries": 2}, "refused")],
    "retry_backoff": [
        ("c", {"retries": 1}, {"retry_backoff": 7}, "changes"),
        ("c", {"retries": 9}, {"retry_backoff": 2}, "refused"),
    ],
    "timeout": [("c", {}, {"timeout": 30}, "changes"), ("c", SERVICE, {"timeout": 30}, "refused")],
    "parallelism": [("b", {}, {"parallelism": 1}, "changes"), ("c", SERVICE, {"parallelism": 1}, "refused")],
    "resources": [("c", {}, {"resources": {"cpus": 4}}, "changes")],
    "min_success": [
        ("c", {}, {"min_success": 1}, "changes"),
        (
            "c",
            {},
            {"min_success": 1},
            "refused",
            {"b": {**SERVICE, "fan_out": {"x": "${a}"}, "with": {"model": "${item.x}"}}},
        ),
    ],
    "wait": [("c", {"min_success": 1}, {"wait": "quorum"}, "refused")],
    "on_failure": [
        ("c", {}, {"on_failure": "fail_fast"}, "ignored"),
        ("c", {}, {"on_failure": "continue"}, "refused"),
    ],
    "cache": [("c", {}, {"cache": False}, "ignored")],
    "restarts": [("c", SERVICE, {"restarts": 9}, "ignored")],
    "ready_timeout": [("c", SERVICE, {"ready_timeout": 9}, "changes")],
    "description": [("c", {}, {"description": "sums"}, "changes")],
}
WORKFLOW_CASES: dict[str, tuple[dict, str]] = {
    "name": ({"name": "other"}, "changes"),
    "description": ({"description": "about"}, "changes"),
    "version": ({"version": "2"}, "changes"),
    "params": ({"params": {"p": 1, "q": "x"}}, "changes"),
    "steps": ({"steps": {**BASE, "d": {"uses": "m:i"}}}, "changes"),
    "presets": ({"presets": {"quick": {"params": {"p": 2}}}}, "recorded"),
    "parallelism": ({"parallelism": 3}, "changes"),
    "on_failure": ({"on_failure": "continue"}, "changes"),
    "outputs": ({"outputs": {"total": "${c}"}}, "ignored"),
    "source": ({"source": "elsewhere.yaml"}, "ignored"),
    "import_paths": ({"import_paths": ["/opt/steps"]}, "ignored"),
    "code": ({"code": {"sha256:" + "0" * 64: "def h():\n    return 1\n"}}, "ignored"),
}
NOT_TRANSLATED = ("not translated", "no effect", "not exported")


def _export(data: dict, recorded: bool = False):
    data = {"name": "w", "params": {"p": 1}, **data}
    source = data.pop("source", None)
    workflow = workflow_from_dict(data, source=source, check_imports=False)
    manifest = render.export(workflow, image=IMAGE, artifacts=STORE)
    return manifest if recorded else _without_the_recorded_workflow(manifest)


def _without_the_recorded_workflow(manifest: dict) -> dict:
    """The manifest less the workflow the first task records (every field is there, as the
    pods read it): what Argo itself does with the workflow."""
    for template in manifest["spec"]["templates"]:
        for artifact in template.get("inputs", {}).get("artifacts", []):
            if artifact["name"] == "workflow":
                artifact["raw"]["data"] = "..."
    return manifest


def _check(data: dict, base: dict, expect: str, field: str, where: str) -> None:
    if expect == "refused":
        with pytest.raises(SpecError) as caught:
            _export(data)
        assert any(issue.field.startswith(where) for issue in caught.value.issues), caught.value
        assert all("does not translate to Argo" in issue.message for issue in caught.value.issues)
        return
    changed = _export(data) != _export(base)
    if expect == "recorded":  # only what the pods read from the recorded workflow changes
        assert not changed and _export(data, recorded=True) != _export(base, recorded=True), field
        return
    assert changed == (expect == "changes"), f"{field}: expected the manifest to {expect}"


@pytest.mark.parametrize("field", list(Step.model_fields))
def test_every_step_field_translates_or_is_refused_by_name(field):
    assert field in plan.STEP_FIELDS, f"steps' new field {field!r} has no Argo translation decision"
    assert field in STEP_CASES, f"no test case for steps' field {field!r}"
    decision = plan.STEP_FIELDS[field]
    for step, settings, setting, expect, *others in STEP_CASES[field]:
        steps = {**BASE, **(others[0] if others else {})}
        base = {"steps": {**steps, step: {**steps[step], **settings}}}
        data = {"steps": {**steps, step: {**steps[step], **settings, **setting}}}
        _check(data, base, expect, field, f"steps.{step}.{field.rstrip('_')}")
    expectations = {case[3] for case in STEP_CASES[field]}
    assert ("refused" in expectations) == ("refused" in decision), decision
    if expectations == {"ignored"}:
        assert decision.startswith(NOT_TRANSLATED), decision


@pytest.mark.parametrize("field", list(Workflow.model_fields))
def test_every_workflow_field_translates(field):
    assert field in plan.WORKFLOW_FIELDS, (
        f"the workflow's new field {field!r} has no Argo translation decision"
    )
    setting, expect = WORKFLOW_CASES[field]
    _check({"steps": BASE, **setting}, {"steps": BASE}, expect, field, field)
    if expect == "ignored":
        assert plan.WORKFLOW_FIELDS[field].startswith(NOT_TRANSLATED)


def test_the_docs_say_what_becomes_of_every_field():
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    for field in [*Step.model_fields, *Workflow.model_fields]:
        name = Step.model_fields[field].alias if field in Step.model_fields else None
        assert f"`{name or field}`" in text, f"docs/kubernetes.md does not mention `{name or field}`"
