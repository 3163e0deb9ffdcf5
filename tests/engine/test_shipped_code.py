"""Shipped code (steps defined where workers cannot import them): the workers read it from the
artifact store, on every executor, and refuse it when its bytes no longer match its digest."""

import hashlib

import pytest

import fanflow
from fanflow.spec.loader import workflow_from_dict
from fanflow.stores.artifacts import ArtifactStore, IntegrityError
from fanflow.stores.code import read_code
from fanflow.vocab.imports import shipped_module

SOURCE = "import math\n\n\ndef hypotenuse(a, b):\n    return math.hypot(a, b)\n"


def shipped(source: str):
    digest = "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    spec = workflow_from_dict({"name": "shipped", "steps": {
        "h": {"uses": f"{shipped_module(digest)}:hypotenuse", "with": {"a": 3, "b": 4}}}})
    return spec.model_copy(update={"code": {digest: source}}), digest


def test_shipped_code_runs_in_the_workers(home, executor):
    spec, digest = shipped(SOURCE)
    assert fanflow.run(spec, home=home, executor=executor)["h"] == 5.0
    assert ArtifactStore(home / "artifacts").read_bytes(digest, ".py").decode() == SOURCE


def test_shipped_code_whose_bytes_changed_in_the_store_is_refused_and_shipping_it_repairs_it(home):
    spec, digest = shipped(SOURCE)
    fanflow.run(spec, home=home)
    stored = ArtifactStore(home / "artifacts").path(digest, ".py")
    stored.chmod(0o644)  # stored objects are read-only; the fault is not
    stored.write_text(SOURCE.replace("math.hypot(a, b)", "math.hypot(a, b) * 100"))
    with pytest.raises(IntegrityError, match="do not match its hash"):
        read_code(ArtifactStore(home / "artifacts"), digest)  # what a worker does before importing it
    # The next run ships the code again, which puts the right bytes back: the right answer.
    assert fanflow.run(spec, home=home, cache=False)["h"] == 5.0
    assert read_code(ArtifactStore(home / "artifacts"), digest) == SOURCE


def test_shipped_code_missing_from_the_store_is_a_clear_error_on_resume(home):
    spec, digest = shipped(SOURCE)
    run = fanflow.run(spec, home=home)
    ArtifactStore(home / "artifacts").delete(digest, ".py")
    from fanflow.project import Project

    project = Project(home)
    workflow, _, _ = project.resumable(run.id)
    with pytest.raises(fanflow.SpecError, match=r"the code of step 'h' .* is no longer in the artifact store"):
        project.runner(workflow)
