"""``fanflow exec`` and ``fanflow check-quorum``: what Argo's pods run, run here as real
processes on real steps with a local artifact folder, and compared with the local engine."""

from __future__ import annotations

import json

import pytest
from exporters_helpers import EXAMPLES, ROOT, run_k8s

from fanflow.executors import pod
from fanflow.exporters import kserve

FANOUT = ROOT / "examples" / "fanout_sum"
SQUARE_WITH = '{"x":"${item.x}","delay":"${params.delay}"}'


def _exec(tmp_path, name: str, *args: str, cwd=FANOUT):
    out = tmp_path / f"{name}.json"
    result = run_k8s("exec", "--artifacts", str(tmp_path / "store"), "--output", str(out), *args, cwd=cwd)
    return result, (json.loads(out.read_text()) if out.exists() else None)


def _items(path) -> list[str]:
    """What Argo's withParam hands each task as ``{{item}}``: the list's elements as text."""
    return json.loads(path.read_text())


def test_exec_runs_fan_out_and_fan_in_as_the_local_engine_does(tmp_path):
    from fanflow.project import Project
    from fanflow.spec.loader import load_workflow

    project = Project(tmp_path / "home")
    local = project.run(load_workflow(FANOUT / "workflow.yaml"), params={"n": "3", "delay": "0"})
    assert local.state == "succeeded"
    outputs = {t["name"]: t["output"] for t in project.store.tasks(local.run_id)}
    project.close()

    items = tmp_path / "items.json"
    result, numbers = _exec(
        tmp_path,
        "numbers",
        *("--step", "numbers", "--uses", "steps:numbers", "--with", '{"n":"${params.n}"}'),
        *("--param", "n:int=3", "--list-output", f"${{numbers}}={items}"),
    )
    assert result.returncode == 0, result.stderr
    assert numbers == outputs["numbers"]
    branches = []
    for item in _items(items):
        result, output = _exec(
            tmp_path,
            f"square-{item}",
            *("--step", "square", "--uses", "steps:square", "--with", SQUARE_WITH),
            *("--param", "delay:float=0", "--item", item, "--axis", "x", "--retry", "0"),
        )
        assert result.returncode == 0, result.stderr
        assert f"fanflow: square[x={item}] succeeded" in result.stderr
        assert output == outputs[f"square[x={item}]"]
        branches.append(output)
    result, total = _exec(
        tmp_path,
        "total",
        *("--step", "total", "--uses", "steps:total", "--with", '{"values":"${square[*]}"}'),
        "--collect",
        f"square={json.dumps(branches)}",
    )
    assert result.returncode == 0, result.stderr
    assert total == outputs["total"] == {"sum": 14, "count": 3}


def test_a_failed_task_exits_1_and_leaves_a_failure_a_quorum_can_count(tmp_path):
    result, output = _exec(
        tmp_path,
        "bad",
        *("--step", "square", "--uses", "steps:square", "--with", '{"x":"${item.x}"}'),
        *("--item", '{"x": "a"}'),
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "fanflow: square[x=a] failed: TypeError: can't multiply sequence by non-int of type 'str'"
    )
    assert output == {
        "$failed": "TypeError: can't multiply sequence by non-int of type 'str'",
        "task": "square[x=a]",
    }


def test_a_reference_that_does_not_resolve_fails_the_task(tmp_path):
    result, output = _exec(
        tmp_path,
        "missing",
        *("--step", "total", "--uses", "steps:total", "--with", '{"values":"${numbers.values}"}'),
        *("--input", "numbers=[1, 2]"),
    )
    assert result.returncode == 1
    assert "has no key 'values'" in output["$failed"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--with", '{"x":"${item.x}"}'], "${item.x} needs --item"),
        (["--with", "{not json"], "--with: not JSON"),
        (["--with", '{"x":"${item..x}"}'], "is not a reference"),
        (["--with", '{"x":1}', "--param", "n:int=many"], "--param n: expected a value of type int"),
        (["--with", '{"x":1}', "--item", "[1]"], "--item: expected a JSON object"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, words):
    result, output = _exec(tmp_path, "usage", "--step", "square", "--uses", "steps:square", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert output is None


def test_files_a_step_returns_go_to_the_artifact_store_and_reach_the_fan_in(tmp_path):
    store = tmp_path / "store"
    branches = []
    for model in ("small", "large", "medium", "broken"):
        result, output = _exec(
            tmp_path,
            model,
            *("--step", "train", "--uses", "k8s_example_steps:train"),
            *("--with", '{"data":"${data}","model":"${item.model}"}', "--item", json.dumps({"model": model})),
            *("--input", 'data={"rows": [1, 2]}'),
            cwd=EXAMPLES,
        )
        assert result.returncode == (1 if model == "broken" else 0), result.stderr
        branches.append(output)
    digest = branches[0]["model"]["$artifact"].removeprefix("sha256:")
    assert (store / "objects" / digest[:2] / f"{digest}.txt").read_text() == "small trained on 2 rows\n"
    result, selected = _exec(
        tmp_path,
        "select",
        *("--step", "select", "--uses", "k8s_example_steps:select"),
        *(
            "--with",
            '{"candidates":"${train[*]}","k":2,"at_least":"${params.bar}"}',
            "--param",
            "bar:float=0.5",
        ),
        *("--collect", f"train={json.dumps(branches)}"),
        cwd=EXAMPLES,
    )
    assert result.returncode == 0, result.stderr
    assert [c["name"] for c in selected] == ["large", "medium"]
    assert kserve.selected_models(selected) == selected


@pytest.mark.parametrize(
    "values",
    [
        [1, 2.5, True, None],
        ["1", "true", "null", "", "a b"],
        [{"name": "cnn", "model": {"$artifact": "sha256:" + "a" * 64}}],
        [["x"], "$$HOME", "$(PATH)", "{{item}}"],
    ],
)
def test_lists_for_with_param_give_each_item_back_exactly(tmp_path, values):
    path = tmp_path / "items.json"
    pod.write_lists({"out": values}, {"${s.out}": str(path)}, "s")
    texts = _items(path)
    assert all(isinstance(t, str) and "$" not in t and "{{" not in t for t in texts)
    assert [pod.parse_item(text, "x")["x"] for text in texts] == values


def test_a_list_output_that_is_not_a_list_fails(tmp_path):
    with pytest.raises(pod.ResolveError, match="not a list"):
        pod.write_lists({"out": 3}, {"${s.out}": str(tmp_path / "l.json")}, "s")


def test_a_quorum_fan_in_gets_only_the_succeeded_branches_in_order():
    task = pod.PodTask(
        step="pick",
        uses="m:f",
        with_={"all": ["${a[*]}", "${b}"], "ids": "${a[*].id}"},
        artifacts="unused",
        inputs={"b": 9},
        collected={"a": [{"id": 1}, {"$failed": "x", "task": "a[i=1]"}, {"id": 3}]},
    )
    assert task.resolve() == {"all": [{"id": 1}, {"id": 3}, 9], "ids": [1, 3]}


@pytest.mark.parametrize(
    ("rule", "width", "code", "words"),
    [
        ("2", "3", 0, "pick: quorum met: 2 of 3 branches of a succeeded, 2 needed; failed: a[i=2]: boom"),
        ("3", "[1, 2, 3]", 1, "pick: quorum not met: 2 of 3 branches of a succeeded, 3 needed"),
        ("0.5", "4", 0, "quorum met: 2 of 4 branches of a succeeded, 2 needed"),
        ("0.75", "4", 1, "quorum not met: 2 of 4 branches of a succeeded, 3 needed"),
    ],
)
def test_check_quorum(rule, width, code, words):
    collected = json.dumps([{"id": 1}, {"$failed": "boom", "task": "a[i=2]"}, {"id": 3}])
    result = run_k8s(
        "check-quorum",
        "--step",
        "pick",
        "--min-success",
        rule,
        "--collect",
        f"a={collected}",
        "--width",
        f"a={width}",
    )
    assert result.returncode == code
    assert words in result.stderr


def test_a_service_pod_renders_its_inference_service(tmp_path):
    candidate = {
        "name": "cnn",
        "model": {"$artifact": "sha256:" + "b" * 64, "format": "file", "suffix": ".pt"},
    }
    task = pod.PodTask(
        step="serve",
        uses=kserve.MODEL_SERVER,
        with_={"model": "${item.candidate}", "torch_threads": 2},
        artifacts="s3://bucket/fanflow",
        item={"candidate": candidate},
        run_id="wf-abc12",
        cpus=1,
        gpus=1,
        kind="service",
    )
    out, resource = tmp_path / "out.json", tmp_path / "resource.json"
    assert pod.render_service(task, out, resource, image="img:1", namespace="ml") == 0
    endpoint = json.loads(out.read_text())
    assert endpoint == {"url": "http://wf-abc12-serve-cnn-predictor.ml.svc.cluster.local", "model": "cnn"}
    service = json.loads(resource.read_text())
    assert service["kind"] == "InferenceService" and service["metadata"]["name"] == "wf-abc12-serve-cnn"
    assert service["metadata"]["labels"]["fanflow.dev/run"] == "wf-abc12"
    container = service["spec"]["predictor"]["containers"][0]
    assert container["command"] == ["python", "-m", "fanflow.serving.model_server"]
    assert container["args"][:6] == [
        "--store",
        "s3://bucket/fanflow",
        "--artifact",
        "sha256:" + "b" * 64 + ".pt",
        "--name",
        "cnn",
    ]
    assert "--torch-threads" in container["args"] and container["resources"]["limits"] == {
        "nvidia.com/gpu": "1"
    }

    gateway = pod.PodTask(
        step="gateway",
        uses=kserve.GATEWAY,
        with_={"members": "${serve[*]}", "strategy": "union"},
        artifacts="s3://bucket/fanflow",
        collected={"serve": [endpoint, {"$failed": "x"}]},
        run_id="wf-abc12",
        kind="service",
    )
    assert pod.render_service(gateway, out, resource, image="img:1", namespace="ml") == 0
    args = json.loads(resource.read_text())["spec"]["predictor"]["containers"][0]["args"]
    assert args[:2] == ["--member", f"cnn={endpoint['url']}"] and "--strategy" in args
    assert json.loads(out.read_text())["model"] == "ensemble"


def test_a_service_without_a_model_artifact_fails(tmp_path):
    task = pod.PodTask(
        step="serve",
        uses=kserve.MODEL_SERVER,
        with_={"model": "/tmp/m.pt"},
        artifacts="s3://b/p",
        kind="service",
    )
    out = tmp_path / "out.json"
    assert pod.render_service(task, out, tmp_path / "r.json", image="img", namespace=None) == 1
    assert "expected a model file in the artifact store" in json.loads(out.read_text())["$failed"]
