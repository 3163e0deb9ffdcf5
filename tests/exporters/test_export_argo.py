"""``fanflow export argo``: golden manifests that Argo's schema accepts, what translates to
which Argo construct, and what is refused by name."""

from __future__ import annotations

import json

import pytest
import yaml
from exporters_helpers import EXAMPLES, GOLDEN, IMAGE, ROOT, STORE, check_argo, run_k8s, update_goldens

from fanflow.exporters import argo
from fanflow.exporters.kube import readable_json, safe_json
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import workflow_from_dict

# Every workflow whose export is kept as a golden file (add the reference workflow here).
GOLDEN_EXAMPLES = [
    "examples/fanout_sum/workflow.yaml",
    "tests/exporters/examples/quorum_serve.yaml",
    "examples/video_entity_tagging/workflow.yaml",
]


def golden_path(example: str):
    return GOLDEN / (example.replace("/", "__").removesuffix(".yaml") + ".argo.yaml")


@pytest.mark.parametrize("example", GOLDEN_EXAMPLES)
def test_cli_output_matches_the_golden_file_and_argo_schema(example, tmp_path):
    out = tmp_path / "workflow.yaml"
    result = run_k8s("export", "argo", example, "--image", IMAGE, "--artifacts", STORE, "--output", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    golden = golden_path(example)
    if update_goldens():
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden.name}: run FANFLOW_UPDATE_GOLDENS=1 pytest {__file__}"
    assert text == golden.read_text(), f"{example}: export differs from {golden.name}"
    check_argo(yaml.safe_load(text))


@pytest.mark.parametrize("example", GOLDEN_EXAMPLES)
def test_workflow_template_passes_argo_schema(example):
    from fanflow.spec.loader import load_workflow

    manifest = argo.export(
        load_workflow(ROOT / example), image=IMAGE, artifacts=STORE, template=True, namespace="ml"
    )
    assert manifest["kind"] == "WorkflowTemplate"
    assert manifest["metadata"]["namespace"] == "ml" and "generateName" not in manifest["metadata"]
    check_argo(manifest)


def _export(steps: dict, **extra) -> dict:
    spec = workflow_from_dict({"name": "t", "steps": steps, **extra}, check_imports=False)
    return argo.export(spec, image=IMAGE, artifacts=STORE)


def _tasks(manifest: dict) -> dict[str, dict]:
    dag = manifest["spec"]["templates"][0]["dag"]
    return {t["name"]: t for t in dag["tasks"]}


def _templates(manifest: dict) -> dict[str, dict]:
    return {t["name"]: t for t in manifest["spec"]["templates"]}


def _refusal(steps: dict, **extra) -> str:
    with pytest.raises(SpecError) as caught:
        _export(steps, **extra)
    return "\n".join(str(issue) for issue in caught.value.issues)


def test_fan_out_and_fan_in_translate_to_with_param_and_dependencies():
    manifest = yaml.safe_load(golden_path(GOLDEN_EXAMPLES[0]).read_text())
    tasks = _tasks(manifest)
    assert tasks["square"]["withParam"] == "{{tasks.numbers.outputs.parameters.items}}"
    assert tasks["square"]["dependencies"] == ["numbers"]
    assert tasks["total"]["dependencies"] == ["square"]
    args = _templates(manifest)["total"]["container"]["args"]
    assert "square={{inputs.parameters.all-square}}" in args
    assert _templates(manifest)["square"]["retryStrategy"]["limit"] == 1


def test_a_static_grid_is_expanded_into_with_items():
    manifest = _export(
        {
            "a": {"uses": "m:f", "fan_out": {"x": [1, 2], "y": ["p", "q"]}, "with": {"v": "${item.x}"}},
            "b": {"uses": "m:g", "with": {"all": "${a[*]}"}},
        }
    )
    items = _tasks(manifest)["a"]["withItems"]
    assert items == [{"x": 1, "y": "p"}, {"x": 1, "y": "q"}, {"x": 2, "y": "p"}, {"x": 2, "y": "q"}]
    check_argo(manifest)


def test_options_of_steps_become_argo_fields():
    manifest = _export(
        {
            "a": {
                "uses": "m:f",
                "fan_out": {"x": [1, 2, 3]},
                "with": {"v": "${item.x}"},
                "retries": 3,
                "retry_backoff": "1.5s",
                "timeout": "90s",
                "parallelism": 2,
                "resources": {"cpus": 0.5, "gpus": 1, "memory": "512Mi"},
            },
            "b": {"uses": "m:g", "with": {"all": "${a[*]}"}, "needs": ["c"]},
            "c": {"uses": "m:h", "cache": False},
        },
        parallelism=4,
        on_failure="continue",
    )
    templates = _templates(manifest)
    pod = templates["a"]
    assert pod["retryStrategy"] == {
        "backoff": {"cap": "5m", "duration": "1500ms", "factor": 2},
        "limit": 3,
        "retryPolicy": "Always",
    }
    assert pod["activeDeadlineSeconds"] == 90
    assert pod["container"]["resources"] == {
        "limits": {"nvidia.com/gpu": "1"},
        "requests": {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": "1"},
    }
    assert templates["a-loop"]["parallelism"] == 2
    assert templates["a-loop"]["steps"][0][0]["withItems"] == [{"x": 1}, {"x": 2}, {"x": 3}]
    assert _tasks(manifest)["a"]["template"] == "a-loop"
    assert _tasks(manifest)["b"]["dependencies"] == ["a", "c"]
    assert manifest["spec"]["parallelism"] == 4
    assert manifest["spec"]["templates"][0]["dag"]["failFast"] is False
    check_argo(manifest)


def test_quorum_adds_a_check_step_and_continue_on():
    manifest = yaml.safe_load(golden_path(GOLDEN_EXAMPLES[1]).read_text())
    tasks, templates = _tasks(manifest), _templates(manifest)
    assert tasks["select"]["dependencies"] == ["train", "select-quorum"]
    assert tasks["select-quorum"]["dependencies"] == ["train"]
    assert templates["train-loop"]["steps"][0][0]["continueOn"] == {"error": True, "failed": True}
    check = templates["select-quorum"]["container"]
    assert check["command"] == argo.QUORUM_COMMAND
    assert check["args"][check["args"].index("--width") + 1] == "train=8"


def test_branches_fail_the_run_when_a_consumer_has_no_quorum():
    manifest = _export(
        {
            "a": {"uses": "m:f", "fan_out": {"x": [1, 2]}, "with": {"v": "${item.x}"}},
            "b": {"uses": "m:g", "with": {"all": "${a[*]}"}, "min_success": 1},
            "c": {"uses": "m:g", "with": {"all": "${a[*]}"}},
        }
    )
    assert "continueOn" not in _tasks(manifest)["a"]


def test_services_become_inference_services_created_and_deleted():
    manifest = yaml.safe_load(golden_path(GOLDEN_EXAMPLES[1]).read_text())
    tasks, templates = _tasks(manifest), _templates(manifest)
    create = templates["serve-create"]
    assert create["resource"]["action"] == "create"
    assert create["resource"]["successCondition"] == argo.READY
    assert create["activeDeadlineSeconds"] == 300
    assert tasks["serve-create"]["withParam"] == "{{tasks.serve.outputs.parameters.resource}}"
    assert "serve-create" in tasks["gateway"]["dependencies"]
    cleanup = templates[manifest["spec"]["onExit"]]
    assert cleanup["resource"]["action"] == "delete"
    assert "fanflow.dev/run={{workflow.name}}" in cleanup["resource"]["flags"]
    kept = argo.export(
        workflow_from_dict(yaml.safe_load((EXAMPLES / "quorum_serve.yaml").read_text()), check_imports=False),
        image=IMAGE,
        artifacts=STORE,
        keep_services=True,
    )
    assert "onExit" not in kept["spec"]
    assert "setOwnerReference" not in _templates(kept)["serve-create"]["resource"]


def test_when_becomes_an_argo_condition_also_on_what_depends_on_the_step():
    manifest = _export(
        {
            "a": {"uses": "m:f", "when": "${params.go} and ${params.k} >= 2 or not ${params.mode} == 'x'"},
            "b": {"uses": "m:g", "with": {"v": "${a}"}, "when": "${params.k} != -1.5"},
        },
        params={"go": True, "k": 3, "mode": "y"},
    )
    tasks = _tasks(manifest)
    a = (
        "(({{workflow.parameters.go}}) && ({{workflow.parameters.k}} >= 2)) || "
        "(!('{{workflow.parameters.mode}}' == 'x'))"
    )
    assert tasks["a"]["when"] == a
    assert tasks["b"]["when"] == f"({a}) && ({{{{workflow.parameters.k}}}} != -1.5)"
    check_argo(manifest)


@pytest.mark.parametrize(
    ("steps", "params", "field", "words"),
    [
        ({"when": "${a} == 1"}, {}, "steps.b.when", "known only once steps ran"),
        ({"when": "len(${params.xs}) > 1"}, {"xs": [1]}, "steps.b.when", "no faithful Argo equivalent"),
        ({"when": "${params.k} + 1 > 2"}, {"k": 1}, "steps.b.when", "no faithful Argo equivalent"),
        ({"when": "${params.s} > 'a'"}, {"s": "b"}, "steps.b.when", "may differ in Argo"),
        ({"when": "${params.k} == 'a'"}, {"k": 1}, "steps.b.when", "may differ in Argo"),
        ({"when": "1 < ${params.k} < 3"}, {"k": 2}, "steps.b.when", "one comparison"),
        ({"when": "${params.k} in [1, 2]"}, {"k": 2}, "steps.b.when", "one comparison"),
        ({"when": "${params.xs}"}, {"xs": [1]}, "steps.b.when", "type list"),
        (
            {"fan_out": {"x": "${params.cfg.xs}"}, "with": {"v": "${item.x}"}},
            {"cfg": {"type": "dict", "default": {"xs": [1]}}},
            "steps.b.fan_out",
            "inside a parameter",
        ),
        ({"fan_out": {"x": "${a}", "y": [1, 2]}, "with": {"v": "${item.x}"}}, {}, "steps.b.fan_out", "grid"),
        ({"fan_out": {"x": ["$$HOME"]}}, {}, "steps.b.fan_out.x", "rewrite"),
        ({"fan_out": {"x": ["{{workflow.name}}"]}}, {}, "steps.b.fan_out.x", "rewrite"),
        ({"on_failure": "continue"}, {}, "steps.b.on_failure", "failFast"),
    ],
)
def test_what_does_not_translate_is_refused_by_step_and_field(steps, params, field, words):
    message = _refusal({"a": {"uses": "m:f"}, "b": {"uses": "m:g", **steps}}, params=params)
    assert f"{field}: does not translate to Argo" in message
    assert words in message


def test_fan_out_over_a_collecting_reference_is_refused():
    message = _refusal(
        {
            "a": {"uses": "m:f", "fan_out": {"x": [1, 2]}},
            "b": {"uses": "m:g", "fan_out": {"y": "${a[*]}"}},
        }
    )
    assert "steps.b.fan_out: does not translate to Argo: an axis from a collecting reference" in message


def test_wait_quorum_and_quorum_over_services_are_refused():
    message = _refusal(
        {
            "a": {"uses": "m:f", "fan_out": {"x": [1, 2]}},
            "b": {"uses": "m:g", "with": {"all": "${a[*]}"}, "min_success": 1, "wait": "quorum"},
        }
    )
    assert "steps.b.wait: does not translate to Argo: wait: quorum" in message
    message = _refusal(
        {
            "a": {"uses": "m:f"},
            "s": {
                "uses": "fanflow.serving.model_server:serve_model",
                "kind": "service",
                "fan_out": {"c": "${a}"},
                "with": {"model": "${item.c}"},
            },
            "g": {"uses": "m:g", "with": {"all": "${s[*]}"}, "min_success": 1},
        }
    )
    assert "steps.g.min_success: does not translate to Argo: a quorum over the services of 's'" in message


@pytest.mark.parametrize(
    ("service", "field", "words"),
    [
        ({"uses": "m:serve"}, "steps.s.uses", "fanflow's model server"),
        ({"with": {"model": "${a}", "colour": "red"}}, "steps.s.with", "takes no colour"),
        ({"retries": 2}, "steps.s.retries", "KServe restarts"),
        ({"timeout": 30}, "steps.s.timeout", "runs until the workflow ends"),
    ],
)
def test_service_steps_that_do_not_translate_are_refused(service, field, words):
    step = {"uses": "fanflow.serving.model_server:serve_model", "kind": "service", "with": {"model": "${a}"}}
    message = _refusal({"a": {"uses": "m:f"}, "s": {**step, **service}})
    assert f"{field}: does not translate to Argo" in message and words in message


def test_step_names_that_collide_on_argo_are_refused():
    message = _refusal({"a_b": {"uses": "m:f"}, "a-b": {"uses": "m:g"}})
    assert "steps.a-b.name: does not translate to Argo" in message


def test_parameter_values_argo_or_kubernetes_would_rewrite_are_refused():
    message = _refusal({"a": {"uses": "m:f"}}, params={"greeting": "hello {{workflow.name}}"})
    assert "params.greeting: does not translate to Argo" in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as caught:
        _export({"a": {"uses": "m:f", "when": "${params.xs}", "on_failure": "continue"}}, params={"xs": [1]})
    assert {issue.field for issue in caught.value.issues} == {"steps.a.when", "steps.a.on_failure"}


def test_parameters_keep_their_types_through_argo():
    manifest = _export(
        {"a": {"uses": "m:f", "with": {"v": "${params.n}", "s": "${params.s}", "l": "${params.l}"}}},
        params={
            "n": {"type": "float", "default": 1},
            "s": {"type": "str", "default": "8"},
            "l": [1, "a"],
            "t": {"type": "str", "choices": ["x", "y"]},
        },
    )
    params = {p["name"]: p for p in manifest["spec"]["arguments"]["parameters"]}
    assert params["n"]["value"] == "1" and params["s"]["value"] == "8" and params["l"]["value"] == '[1,"a"]'
    assert "value" not in params["t"] and params["t"]["enum"] == ["x", "y"]
    args = _templates(manifest)["a"]["container"]["args"]
    assert "s:str={{workflow.parameters.s}}" in args and "l:list={{workflow.parameters.l}}" in args


def _kubernetes_expand(text: str) -> str:
    """What the kubelet does to a container argument: ``$$`` → ``$``; ``$(X)`` → X's value
    (none is defined here, so it stays)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and text[i + 1 : i + 2] == "$":
            out.append("$")
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    "value", ["${params.x}", "$${not a ref}", "cost: $$5 and $(HOME)", "{{workflow.name}}", "{{{x"]
)
def test_arguments_survive_argo_and_kubernetes(value):
    for text in (readable_json({"v": value}), safe_json({"v": value})):
        assert "{{" not in text
        assert json.loads(_kubernetes_expand(text)) == {"v": value}


def test_bad_options_are_one_line_with_exit_code_2(tmp_path):
    for args, words in (
        (["examples/fanout_sum/workflow.yaml", "--artifacts", "/data/store"], "pods share no folder"),
        (["missing.yaml", "--artifacts", STORE], "no such workflow file"),
    ):
        result = run_k8s("export", "argo", *args, "--image", IMAGE)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_a_refusal_from_the_command_line_names_the_file_step_and_field(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text("name: w\nsteps:\n  a:\n    uses: json:dumps\n    with: {obj: 1}\n    when: len('ab') > 1\n")
    result = run_k8s("export", "argo", str(path), "--image", IMAGE, "--artifacts", STORE)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: steps.a.when: does not translate to Argo: \"len('ab')\" has no faithful Argo equivalent"
    ]
    assert result.stdout == ""


def test_the_schema_check_catches_unknown_keys_and_wrong_types():
    manifest = yaml.safe_load(golden_path(GOLDEN_EXAMPLES[0]).read_text())
    typo = json.loads(json.dumps(manifest))
    typo["spec"]["templates"][1]["container"]["imagee"] = "x"
    with pytest.raises(AssertionError):
        check_argo(typo)
    wrong = json.loads(json.dumps(manifest))
    wrong["spec"]["templates"][1]["retryStrategy"] = {"limit": {"times": 3}}
    with pytest.raises(Exception, match="limit"):
        check_argo(wrong)


def test_the_commands_register_in_the_main_command_line(tmp_path):
    """The lines that add these commands to ``fanflow`` (fanflow/cli/main.py) work."""
    import typer
    from typer.testing import CliRunner

    from fanflow.cli.kube import check_quorum_command, exec_command, export_app

    app = typer.Typer(
        name="fanflow", add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
    )
    app.add_typer(export_app, name="export")
    app.command("exec")(exec_command)
    app.command("check-quorum")(check_quorum_command)
    out = tmp_path / "wf.yaml"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "argo",
            str(ROOT / GOLDEN_EXAMPLES[0]),
            "--image",
            IMAGE,
            "--artifacts",
            STORE,
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == golden_path(GOLDEN_EXAMPLES[0]).read_text()
    assert CliRunner().invoke(app, ["check-quorum", "--help"]).exit_code == 0


def test_a_fan_out_over_a_list_parameter_loops_with_param_over_it(tmp_path):
    from fanflow.exporters.argo import export
    from fanflow.spec.loader import workflow_from_dict

    spec = workflow_from_dict({"name": "p", "params": {"xs": ["a", "b"]}, "steps": {
        "b": {"uses": "json:dumps", "fan_out": {"x": "${params.xs}"}, "with": {"obj": "${item.x}"}}}})
    manifest = export(spec, image="img:1", artifacts="s3://b/p")
    tasks = manifest["spec"]["templates"][0]["dag"]["tasks"]
    assert [t.get("withParam") for t in tasks] == ["{{workflow.parameters.xs}}"]


def test_the_pod_takes_a_bare_string_item_as_text():
    from fanflow.executors.pod import parse_item

    assert parse_item("cnn", "model") == {"model": "cnn"}
    assert parse_item('{"name": "a"}', "model") == {"model": {"name": "a"}}
    assert parse_item("3", "x") == {"x": 3}
