"""``fanflow exec``: what Argo's pods run, as real processes and as functions, on real steps
with a local artifact store, compared with the local engine."""

from __future__ import annotations

import json

import pytest

from fanflow.kube import kserve, pod
from fanflow.kube.records import RunRecords
from fanflow.spec.loader import load_workflow, workflow_from_dict
from tests.kube.helpers import EXAMPLES, FANOUT, run_capturing_inputs, run_kube
from tests.kube.schemas import check_inference_service


def _exec(store, *args, cwd=FANOUT):
    return run_kube("exec", "--artifacts", store, "--run", "r1", *args, cwd=cwd)


def test_the_pods_of_a_run_give_each_task_what_the_local_engine_gives_it(tmp_path):
    handed = run_capturing_inputs(FANOUT / "workflow.yaml", tmp_path / "home", {"n": "3", "delay": "0"})
    local = handed.result
    assert local.state == "succeeded"

    store, params = tmp_path / "store", tmp_path / "params"
    params.mkdir()
    (params / "n").write_text("3")
    (params / "delay").write_text("0.2")  # the exported default's text: the default itself
    result = _exec(store, "--begin", "--workflow", FANOUT / "workflow.yaml", "--params", params)
    assert result.returncode == 0, result.stderr
    result = _exec(store, "--step", "numbers", "--width", f"square={tmp_path / 'width'}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "width").read_text() == "3"
    for branch in range(3):
        result = _exec(store, "--step", "square", "--branch", str(branch), "--retry", "0")
        assert result.returncode == 0, result.stderr
        assert f"fanflow: square[x={branch + 1}] succeeded" in result.stderr
    assert _exec(store, "--step", "total").returncode == 0
    records = RunRecords(str(store), "r1")
    assert records.run()[1] == {"n": 3, "delay": 0.2}
    for name in ("numbers", "square[x=2]", "total"):
        assert records.task(name)["output"] == local.tasks[name].output
    assert json.dumps(records.task("square[x=2]")["inputs"]) == '{"x": 2, "delay": 0.2}'
    assert json.dumps(handed.inputs["square[x=2]"]) == '{"x": 2, "delay": 0.0}'  # the run's own delay
    assert records.task("total")["inputs"] == {"values": [1, 4, 9]} == handed.inputs["total"]


@pytest.fixture
def run(tmp_path):
    """A run recorded in a fresh store: ``run(workflow_dict, **texts)``."""

    def record(data: dict, **texts: str) -> RunRecords:
        records = RunRecords(str(tmp_path / "store"), "r1")
        workflow = workflow_from_dict({"name": "w", **data}, check_imports=False)
        assert pod.begin(records, workflow, texts, pod.Decisions()) == pod.EXIT_OK
        return records

    return record


def _task(records, step, branch=None, attempt=1):
    task = pod.PodTask.open(records, step, branch, attempt)
    return task, pod.run_task(task, pod.Decisions(), [str(EXAMPLES)])


def test_a_failed_step_exits_1_and_a_failure_no_retry_changes_exits_3(run):
    records = run({"steps": {
        "a": {"uses": "values_steps:fail", "with": {"n": 1}},
        "b": {"uses": "values_steps:no_such_function"},
        "c": {"uses": "values_steps:echo", "with": {"value": "${a.missing}"}, "needs": []},
    }})  # fmt: skip
    _, code = _task(records, "a")
    assert code == pod.EXIT_FAILED
    assert records.task("a") == {
        "task": "a", "step": "a", "attempt": 1, "state": "failed", "error": "ValueError: branch 1 cannot succeed",
    }  # fmt: skip
    _, code = _task(records, "b")
    assert code == pod.EXIT_FINAL and "has no 'no_such_function'" in records.task("b")["error"]
    _, code = _task(records, "c")
    assert code == pod.EXIT_FINAL and records.task("c")["error"] == "${a.missing}: a has no output"


def test_parameters_arrive_as_the_engine_converts_them(run, tmp_path):
    data = {"params": {"x": {"type": "float", "default": 1}, "l": ["1", 2.0], "s": "1e5"},
            "steps": {"a": {"uses": "values_steps:echo", "with": {"value": "${params.x}"}}}}  # fmt: skip
    records = run(data, x="1", l='["1",2.0]', s="1e5")
    assert json.dumps(records.run()[1]) == '{"x": 1, "l": ["1", 2.0], "s": "1e5"}'  # the defaults themselves
    records = run(data, x="2", l='["1", 2.0, null]', s="x")
    assert json.dumps(records.run()[1]) == '{"x": 2.0, "l": ["1", 2.0, null], "s": "x"}'
    workflow = workflow_from_dict({"name": "w", **data}, check_imports=False)
    bad = RunRecords(str(tmp_path / "bad"), "r2")
    assert pod.begin(bad, workflow, {"x": "many"}, pod.Decisions()) == pod.EXIT_FINAL


def test_an_empty_fan_out_runs_one_pod_that_does_nothing_and_the_fan_in_gets_nothing(run, tmp_path):
    records = run({"params": {"xs": {"type": "list", "default": []}}, "steps": {
        "a": {"uses": "values_steps:echo", "fan_out": {"x": "${params.xs}"}, "with": {"value": "${item.x}"}},
        "b": {"uses": "values_steps:gather", "with": {"all": "${a[*]}"}},
    }})  # fmt: skip
    width = tmp_path / "width"
    pod.begin(records, records.run()[0], {}, pod.Decisions(widths={"a": str(width)}))
    assert width.read_text() == "1"
    task, code = _task(records, "a", 0)
    assert code == pod.EXIT_OK and task.name == "a" and records.task("a") is None
    _, code = _task(records, "b")
    assert code == pod.EXIT_OK and records.task("b")["inputs"] == {"all": []}


def test_a_fan_out_over_what_is_not_a_list_fails_its_only_branch_with_the_engines_error(run, tmp_path):
    records = run({"steps": {
        "n": {"uses": "values_steps:echo", "with": {"value": 3}},
        "a": {"uses": "values_steps:echo", "fan_out": {"x": "${n.got}"}, "with": {"value": "${item.x}"}},
    }})  # fmt: skip
    width = tmp_path / "width"
    task = pod.PodTask.open(records, "n", None, 1)
    assert pod.run_task(task, pod.Decisions(widths={"a": str(width)}), [str(EXAMPLES)]) == pod.EXIT_OK
    assert width.read_text() == "1"
    _, code = _task(records, "a", 0)
    assert code == pod.EXIT_FINAL
    assert records.task("a")["error"] == "fan_out.x: expected a list from ${n.got}, got int"


def test_verdicts_are_the_engines_and_one_that_cannot_be_evaluated_lets_the_step_fail(run, tmp_path):
    records = run({"params": {"k": 3}, "steps": {
        "a": {"uses": "values_steps:echo", "with": {"value": 1}, "when": "${params.k} in [1, 2, 3]"},
        "b": {"uses": "values_steps:echo", "with": {"value": 1}, "when": "len(${params.k}) > 1"},
    }})  # fmt: skip
    decisions = pod.Decisions(verdicts={"a": str(tmp_path / "a"), "b": str(tmp_path / "b")})
    pod.begin(records, records.run()[0], {}, decisions)
    assert (tmp_path / "a").read_text() == "true" and (tmp_path / "b").read_text() == "true"
    _, code = _task(records, "b")
    assert code == pod.EXIT_FINAL and "has no len()" in records.task("b")["error"]


def test_a_quorum_fan_in_gets_only_the_succeeded_branches_in_declared_order(run):
    records = run({"steps": {
        "a": {"uses": "values_steps:echo", "fan_out": {"x": [1, 2, 3]}, "with": {"value": "${item.x}"}},
        "b": {"uses": "values_steps:gather", "with": {"all": "${a[*].got}"}, "min_success": 2},
        "c": {"uses": "values_steps:gather", "with": {"all": "${a[*].got}"}, "min_success": 3},
    }})  # fmt: skip
    for branch in (2, 0):
        _task(records, "a", branch)
    records.save_task("a[x=2]", {"step": "a", "attempt": 1, "state": "failed", "error": "boom"})
    _, code = _task(records, "b")
    assert code == pod.EXIT_OK and records.task("b")["inputs"] == {"all": [1, 3]}
    _, code = _task(records, "c")
    assert code == pod.EXIT_FINAL
    assert records.task("c")["error"] == (
        "quorum not met: 2 of 3 branches of a succeeded, 3 needed; failed: a[x=2]: boom"
    )


def test_files_a_step_returns_go_to_the_artifact_store_and_reach_the_fan_in(run, tmp_path):
    records = run(
        load_workflow(EXAMPLES / "train_select.yaml", check_imports=False).model_dump(by_alias=True)
    )
    _task(records, "data")
    codes = [_task(records, "train", branch)[1] for branch in range(4)]
    assert codes == [0, 0, 0, 1]  # the broken model fails, as it may when really training
    model = records.task("train[model=small]")["output"]["model"]
    digest = model["$artifact"].removeprefix("sha256:")
    assert (
        tmp_path / "store" / "objects" / digest[:2] / f"{digest}.txt"
    ).read_text() == "small trained on 20 rows\n"
    _, code = _task(records, "select")
    assert code == 0
    selected = records.task("select")["output"]
    assert [c["name"] for c in selected] == ["large", "medium"] and kserve.selected_models(
        selected
    ) == selected


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "give --step STEP (or --begin"),
        (["--step", "square"], "run 'r1' has no record in"),
        (["--begin"], "--begin takes --workflow"),
        (["--step", "total", "--width", "no-equals-sign"], "--width 'no-equals-sign': expected NAME=VALUE"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, words):
    result = _exec(tmp_path / "store", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_a_branch_the_fan_out_does_not_have_is_a_usage_error(run):
    records = run(
        {"steps": {"a": {"uses": "values_steps:echo", "fan_out": {"x": [1]}, "with": {"value": 1}}}}
    )
    with pytest.raises(pod.PodUsageError, match="--branch 5: step 'a' has 1 branches"):
        _task(records, "a", 5)
    with pytest.raises(pod.PodUsageError, match="the run's workflow has no such step"):
        _task(records, "nope")


def test_a_service_pod_renders_its_inference_service_and_records_its_endpoint(run, tmp_path):
    candidate = {
        "name": "cnn",
        "model": {"$artifact": "sha256:" + "b" * 64, "format": "file", "suffix": ".pt"},
    }
    records = run({"params": {"models": [candidate]}, "steps": {
        "serve": {"uses": kserve.MODEL_SERVER, "kind": "service", "fan_out": {"c": "${params.models}"},
                  "with": {"model": "${item.c}", "torch_threads": 2, "port": 9000},
                  "resources": {"cpus": 1, "gpus": 1}},
        "gateway": {"uses": kserve.GATEWAY, "kind": "service", "with": {"members": "${serve[*]}"}},
    }})  # fmt: skip
    resource = tmp_path / "resource.json"
    task = pod.PodTask.open(records, "serve", 0, 1)
    assert pod.render_service(task, pod.Decisions(), resource, image="img:1", namespace="ml") == 0
    endpoint = records.task("serve[c=cnn]")["output"]
    assert endpoint == {"url": "http://r1-serve-0-predictor.ml.svc.cluster.local", "model": "cnn"}
    service = json.loads(resource.read_text())
    check_inference_service(service)
    assert (
        service["metadata"]["name"] == "r1-serve-0"
        and service["metadata"]["labels"]["fanflow.dev/run"] == "r1"
    )
    container = service["spec"]["predictor"]["containers"][0]
    assert container["args"][:6] == ["--store", str(tmp_path / "store"), "--artifact", "sha256:" + "b" * 64 + ".pt",
                                     "--name", "cnn"]  # fmt: skip
    assert container["ports"] == [{"containerPort": 9000, "protocol": "TCP"}]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    gateway = pod.PodTask.open(records, "gateway", None, 1)
    assert pod.render_service(gateway, pod.Decisions(), resource, image="img:1", namespace="ml") == 0
    args = json.loads(resource.read_text())["spec"]["predictor"]["containers"][0]["args"]
    assert args[:2] == ["--member", f"cnn={endpoint['url']}"]


def test_a_service_without_a_model_artifact_fails(run, tmp_path):
    records = run({"steps": {"serve": {"uses": kserve.MODEL_SERVER, "kind": "service",
                                       "with": {"model": "/tmp/m.pt"}}}})  # fmt: skip
    task = pod.PodTask.open(records, "serve", None, 1)
    assert pod.render_service(task, pod.Decisions(), tmp_path / "r.json", image="img", namespace=None) == 3
    assert "expected a model file in the artifact store" in records.task("serve")["error"]
