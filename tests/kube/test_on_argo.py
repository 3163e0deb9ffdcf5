"""Exported workflows run the way Argo Workflows runs them: a miniature controller
(``argo_controller``) with the parameter rules of each supported Argo version
(``argo_rules``, read from Argo's source), every pod a real ``fanflow exec`` process
(``cluster``). Every task's inputs and outputs equal a local run's, bit for bit (the same
JSON text: key order, ``1.0`` against ``1``, integers above 2**53, strings that read as
other types), and Argo never sees a value, only the run's name, branch numbers and the
widths and verdicts pods decide."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import pytest

from fanflow.engine.runner import Runner
from fanflow.executors.base import Executor, TaskResult, TaskSpec
from fanflow.kube.records import RunRecords
from fanflow.kube.render import export
from fanflow.spec.loader import load_workflow
from fanflow.vocab.states import State
from tests.kube.argo_controller import Controller, Outcome
from tests.kube.argo_rules import VERSIONS, ArgoVersion
from tests.kube.cluster import Cluster
from tests.kube.helpers import EXAMPLES, FANOUT, IMAGE, REFERENCE, Handed, run_capturing_inputs

pytestmark = pytest.mark.slow
OLDEST, STRICTEST, NEWEST = VERSIONS[0], ArgoVersion.parse("v3.7.11"), VERSIONS[-1]
CONTROL = {"workflow.name", "workflow.namespace", "item", "retries", "inputs.parameters.branch",
           "inputs.parameters.width"}  # fmt: skip


def text(value) -> str:
    """A value as JSON text, key order and number forms kept: equal texts, identical values."""
    return json.dumps(value)


def run_locally(workflow_path: Path, home: Path, params: dict | None = None) -> Handed:
    return run_capturing_inputs(workflow_path, home, params)


def run_on_argo(
    workflow_path: Path,
    version: ArgoVersion,
    root: Path,
    params: dict | None = None,
    image_dir: Path = EXAMPLES,
) -> tuple[Outcome, RunRecords]:
    store = f"local://{shared_store(root / 'store')}"
    manifest = export(load_workflow(workflow_path), image=IMAGE, artifacts=store, namespace="ml")
    cluster = Cluster(root / "cluster", image_dir)
    try:
        controller = Controller(manifest, version, cluster, parameters=params)
        outcome = controller.run()
    finally:
        cluster.close()
    return outcome, RunRecords(store, controller.name)


def shared_store(folder: Path) -> Path:
    """A folder every pod reaches, standing for an object store: like an object store, it
    needs no folder made before an object is put under ``objects/xx/``."""
    for i in range(256):
        (folder / "objects" / f"{i:02x}").mkdir(parents=True, exist_ok=True)
    return folder


def assert_same_as_local(local: Handed, records: RunRecords) -> None:
    """Every task the local run ran has a record on Argo with the same inputs and output
    (or the same error); every task it skipped left none."""
    for name, task in local.result.tasks.items():
        record = records.task(name)
        if task.state is State.SKIPPED:
            assert record is None, f"{name} ran on Argo but was skipped locally"
            continue
        assert record is not None, f"{name} left no record on Argo"
        if task.state is State.FAILED:
            assert record["state"] == "failed" and _detail(record["error"]) == _detail(task.error), name
            continue
        assert record["state"] == "succeeded", f"{name}: {record.get('error')}"
        assert text(record["inputs"]) == text(local.inputs[name]), f"{name}: inputs differ"
        assert text(record["output"]) == text(task.output), f"{name}: output differs"


def _detail(error: str) -> str:
    """An error less the engine's word for when it saw a quorum fail (early or at the end)."""
    return error.split(": ", 1)[1] if error.startswith(("quorum not met", "quorum can no longer")) else error


def assert_only_control_flow(outcome: Outcome, params: tuple[str, ...] = ()) -> None:
    """Argo substituted nothing but the run's name, branch numbers, attempts, widths,
    verdicts and the parameters' texts (for the first pod): no step's value."""
    for tag, value in outcome.substituted:
        if tag.startswith("workflow.parameters."):
            assert tag.removeprefix("workflow.parameters.") in params
        elif tag.startswith("tasks.") and ".outputs.parameters." in tag:
            name = tag.rsplit(".", 1)[1]
            decided = value.isdigit() if name.startswith("width-") else value in ("true", "false")
            assert name.startswith(("width-", "when-")) and decided, (tag, value)
        elif (
            tag.startswith("steps.render.outputs.parameters.resource") or tag == "inputs.parameters.resource"
        ):
            assert json.loads(value)["kind"] == "InferenceService"
        else:
            assert tag in CONTROL and (value.isdigit() or tag.startswith("workflow.")), (tag, value)


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    local = run_locally(FANOUT / "workflow.yaml", tmp_path_factory.mktemp("local"), {"n": "4", "delay": "0"})
    assert local.result.state == "succeeded", local.result.error
    return local


@pytest.mark.parametrize("version", VERSIONS, ids=str)
def test_the_quick_start_runs_as_locally_on_every_version(quick_start, version, tmp_path):
    outcome, records = run_on_argo(
        FANOUT / "workflow.yaml", version, tmp_path, {"n": "4", "delay": "0"}, FANOUT
    )
    assert outcome.phase == "Succeeded", outcome.message
    assert_same_as_local(quick_start, records)
    assert records.task("total")["output"] == {"sum": 30, "count": 4}
    assert_only_control_flow(outcome, ("n", "delay"))


@pytest.fixture(scope="module")
def values_locally(tmp_path_factory):
    local = run_locally(EXAMPLES / "values.yaml", tmp_path_factory.mktemp("local"))
    assert local.result.state == "succeeded", local.result.error
    return local


@pytest.mark.parametrize("version", [OLDEST, STRICTEST], ids=str)
def test_values_argo_would_reencode_arrive_exactly(values_locally, version, tmp_path):
    """Items "1", "true", "null" stay strings; 1.0 stays a float; 2**53+1 and a 20-digit
    integer stay exact; a dict keeps its key order and its "$" and "{{"; unnamed items and
    equal labels get the engine's distinct names; a condition with len() over a parameter
    and a step's output is the engine's; a skipped step skips what depends on it."""
    outcome, records = run_on_argo(EXAMPLES / "values.yaml", version, tmp_path)
    assert outcome.phase == "Succeeded", outcome.message
    assert_same_as_local(values_locally, records)
    words = [records.task(n)["output"] for n in values_locally.result.tasks if n.startswith("words[")]
    assert [w["got"] for w in words][:3] == ["1", "true", "null"] and words[-1] == {
        "got": 1.0,
        "type": "float",
    }
    assert [n for n in values_locally.result.tasks if n.startswith("records[")][:2] == [
        "records[r=0,k=1]",
        "records[r=0,k=1,#1]",
    ]
    assert records.task("never") is None and records.task("after_never") is None
    assert_only_control_flow(outcome, ("words", "width"))


@pytest.mark.timeout(900)  # 200 pods, each a Python process
def test_a_fan_in_over_200_branches_of_4_kb_each(tmp_path):
    local = run_locally(EXAMPLES / "wide.yaml", tmp_path / "local")
    assert local.result.state == "succeeded", local.result.error
    outcome, records = run_on_argo(EXAMPLES / "wide.yaml", NEWEST, tmp_path / "argo")
    assert outcome.phase == "Succeeded", outcome.message
    assert_same_as_local(local, records)
    gathered = records.task("gather")
    assert len(gathered["inputs"]["blocks"]) == 200
    assert len(text(gathered["inputs"])) > 200 * 4096  # none of it passed through Argo or argv
    assert_only_control_flow(outcome, ("width", "size"))


@pytest.mark.parametrize("version", [VERSIONS[1], STRICTEST, ArgoVersion.parse("v4.0.2"), NEWEST], ids=str)
def test_a_quorum_that_no_branch_meets_fails_with_every_error(version, tmp_path):
    """Argo 3.7.11+ and 4.0.2+ requeue a task whose references do not resolve: a check that
    read the branches' collected outputs hung there. The fan-in's own pod counts instead."""
    local = run_locally(EXAMPLES / "doomed.yaml", tmp_path / "local")
    assert local.result.state == "failed"
    outcome, records = run_on_argo(EXAMPLES / "doomed.yaml", version, tmp_path / "argo")
    assert outcome.phase == "Failed", outcome.message
    assert_same_as_local(local, records)
    error = records.task("pick")["error"]
    assert error.startswith("quorum not met: 0 of 3 branches of tries succeeded, 1 needed; failed: ")
    for n in (1, 2, 3):
        assert f"tries[n={n}]: ValueError: branch {n} cannot succeed" in error


# -- the reference workflow -------------------------------------------------------------------

SMALL = {"train_clips": "160", "val_clips": "80", "test_clips": "80", "epochs": "1", "min_steps": "0",
         "models": '["cnn_batchnorm", "logistic"]', "min_accuracy": "0.0", "margin": "-1.0"}  # fmt: skip


class Replay(Executor):
    """An executor that runs nothing: each task's result is what its pod recorded on Argo.
    Driving the local engine with it resolves every task's inputs from the Argo run's own
    outputs, so the inputs the pods resolved can be compared with the engine's exactly,
    even where a step's output is not reproducible (training times)."""

    name = "replay"

    def __init__(self, records: RunRecords):
        self.records = records
        self.results: queue.Queue[TaskResult] = queue.Queue()
        self.inputs: dict[str, dict] = {}

    def capacity(self) -> dict[str, float]:
        return {"cpus": 64.0, "gpus": 8.0, "memory": float(2**40)}

    def submit(self, spec: TaskSpec) -> None:
        self.inputs[spec.task] = spec.inputs
        record = self.records.task(spec.task)
        if record is None:
            self.results.put(TaskResult(spec.task, spec.attempt, "failed", error="not run on Argo"))
        elif record["state"] != "succeeded":
            self.results.put(
                TaskResult(spec.task, spec.attempt, "failed", error=record["error"], retryable=False)
            )
        else:
            status = "serving" if spec.kind == "service" else "succeeded"
            self.results.put(TaskResult(spec.task, spec.attempt, status, output=record["output"]))

    def wait(self, timeout: float | None) -> list[TaskResult]:
        try:
            first = self.results.get(timeout=timeout or 0.01)
        except queue.Empty:
            return []
        found = [first]
        while not self.results.empty():
            found.append(self.results.get())
        return found

    def stop(self, task: str, status="cancelled", reason: str = "") -> None:
        self.results.put(TaskResult(task, 1, status, error=reason))

    def close(self) -> None:
        pass


@pytest.mark.timeout(900)  # two runs of the reference workflow, one of them pod by pod
def test_the_reference_workflow_runs_as_the_engine_would_run_it(tmp_path):
    """Every pod of the reference workflow resolves exactly the inputs the engine gives
    that task from the same upstream outputs; the servers are real processes found by
    their cluster names; the report's figures equal a local run's."""
    local = run_locally(REFERENCE, tmp_path / "local", SMALL).result
    assert local.state == "succeeded", local.error
    outcome, records = run_on_argo(REFERENCE, NEWEST, tmp_path / "argo", SMALL)
    assert outcome.phase == "Succeeded", outcome.message
    assert_only_control_flow(outcome, tuple(load_workflow(REFERENCE).params))

    replay = Replay(records)
    replayed = Runner(load_workflow(REFERENCE), replay, params=SMALL, home=tmp_path / "replay").run()
    assert replayed.state == "succeeded", replayed.error
    assert list(replayed.tasks) == list(local.tasks)  # the same tasks, the same names
    for name in replayed.tasks:
        assert text(records.task(name)["inputs"]) == text(replay.inputs[name]), name
    assert text(records.task("ingest")["output"]) == text(local.tasks["ingest"].output)

    # The report's files name their run, so its figures are compared, not its bytes.
    report, expected = records.task("aggregate")["output"], local.tasks["aggregate"].output
    assert sorted(report) == sorted(expected)
    assert text(report["summary"]) == text(expected["summary"])
    assert report["summary"]["served_mismatched_clips"] == 0  # the cluster's gateway answered as chosen
