"""``fanflow export argo``: golden manifests, what each step becomes on Argo, the names and
versions it must fit, and what is refused by name."""

from __future__ import annotations

import json

import pytest
import yaml

from fanflow.kube import plan, render
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import load_workflow, workflow_from_dict
from tests.kube.helpers import (
    EXAMPLES,
    FANOUT,
    GOLDEN,
    IMAGE,
    REFERENCE,
    ROOT,
    STORE,
    run_kube,
    update_goldens,
)
from tests.kube.schemas import check_argo, check_kubernetes

# Every workflow whose export is kept as a golden file.
GOLDEN_EXAMPLES = [
    "examples/fanout_sum/workflow.yaml",
    "tests/kube/examples/quorum_serve.yaml",
    "examples/video_entity_tagging/workflow.yaml",
]


def golden_path(example: str):
    return GOLDEN / (example.replace("/", "__").removesuffix(".yaml") + ".argo.yaml")


@pytest.mark.parametrize("example", GOLDEN_EXAMPLES)
def test_cli_output_matches_the_golden_file(example, tmp_path):
    out = tmp_path / "workflow.yaml"
    result = run_kube("export", "argo", example, "--image", IMAGE, "--artifacts", STORE, "--output", out)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    golden = golden_path(example)
    if update_goldens():
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden.name}: run FANFLOW_UPDATE_GOLDENS=1 pytest {__file__}"
    assert text == golden.read_text(), f"{example}: export differs from {golden.name}"


def _export(steps: dict, **extra) -> dict:
    options = {k: extra.pop(k) for k in ("argo_version", "service_account") if k in extra}
    spec = workflow_from_dict({"name": "t", "steps": steps, **extra}, check_imports=False)
    return render.export(spec, image=IMAGE, artifacts=STORE, **options)


def _tasks(manifest: dict) -> dict[str, dict]:
    return {t["name"]: t for t in manifest["spec"]["templates"][0]["dag"]["tasks"]}


def _templates(manifest: dict) -> dict[str, dict]:
    return {t["name"]: t for t in manifest["spec"]["templates"]}


def _refusal(steps: dict, **extra) -> str:
    with pytest.raises(SpecError) as caught:
        _export(steps, **extra)
    return "\n".join(str(issue) for issue in caught.value.issues)


def test_the_first_task_records_the_workflow_and_its_parameters_as_raw_artifacts():
    manifest = render.export(load_workflow(FANOUT / "workflow.yaml"), image=IMAGE, artifacts=STORE)
    begin = _templates(manifest)["begin"]
    artifacts = {a["name"]: a for a in begin["inputs"]["artifacts"]}
    spec = json.loads(artifacts["workflow"]["raw"]["data"])
    assert spec["steps"]["square"]["fan_out"] == {"x": "${numbers}"}
    assert artifacts["param-n"]["raw"]["data"] == "{{workflow.parameters.n}}"
    assert artifacts["param-n"]["path"] == "/tmp/fanflow/params/n"
    assert _tasks(manifest)["numbers"]["depends"] == "begin.Succeeded"


def test_a_dynamic_fan_out_loops_over_branch_numbers_its_producer_counts():
    manifest = yaml.safe_load(golden_path(GOLDEN_EXAMPLES[0]).read_text())
    tasks, templates = _tasks(manifest), _templates(manifest)
    assert tasks["square"]["withSequence"] == {"count": "{{tasks.numbers.outputs.parameters.width-square}}"}
    assert tasks["square"]["arguments"]["parameters"] == [{"name": "branch", "value": "{{item}}"}]
    assert tasks["total"]["depends"] == "square.Succeeded"
    numbers = templates["numbers"]
    assert "--width" in numbers["container"]["args"]
    assert numbers["outputs"]["parameters"][0]["name"] == "width-square"
    args = templates["total"]["container"]["args"]
    assert args[args.index("--step") + 1] == "total" and not any("{{tasks" in a for a in args)


def test_pods_get_references_only():
    """No value reaches a pod through Argo or its command line: the run's name, the step,
    the branch and the attempt."""
    manifest = render.export(load_workflow(REFERENCE), image=IMAGE, artifacts=STORE)
    for template in manifest["spec"]["templates"]:
        for arg in template.get("container", {}).get("args", []):
            if "{{" in arg:
                assert arg in ("{{workflow.name}}", "{{inputs.parameters.branch}}", "{{retries}}",
                               "{{workflow.namespace}}"), arg  # fmt: skip


def test_a_static_grid_counts_its_items():
    manifest = _export(
        {
            "a": {"uses": "m:f", "fan_out": {"x": [1, 2], "y": ["p", "q", "r"]}, "with": {"v": "${item.x}"}},
            "c": {"uses": "m:g", "with": {"all": "${a[*]}"}},
        }
    )
    tasks = _tasks(manifest)
    assert tasks["a"]["withSequence"] == {"count": "6"}
    assert tasks["c"]["depends"] == "a.Succeeded"


def test_options_of_steps_become_argo_fields_typed_as_argos_schema_types_them():
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
        "backoff": {"duration": "1500ms", "factor": "2"},
        "expression": "asInt(lastRetry.exitCode) != 3",
        "limit": "3",
        "retryPolicy": "Always",
    }
    assert pod["activeDeadlineSeconds"] == "90"
    assert pod["container"]["resources"] == {
        "limits": {"nvidia.com/gpu": "1"},
        "requests": {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": "1"},
    }
    loop = templates["a-loop"]
    assert loop["parallelism"] == 2
    assert loop["steps"][0][0]["withSequence"] == {"count": "{{inputs.parameters.width}}"}
    assert _tasks(manifest)["a"]["template"] == "a-loop"
    assert _tasks(manifest)["a"]["arguments"]["parameters"] == [{"name": "width", "value": "3"}]
    assert _tasks(manifest)["b"]["depends"] == "a.Succeeded && c.Succeeded"
    assert manifest["spec"]["parallelism"] == 4
    assert manifest["spec"]["templates"][0]["dag"]["failFast"] is False
    check_argo(manifest)


def test_the_backoff_cap_is_written_for_argo_3_7_and_later_only_and_where_it_matters():
    steps = {"a": {"uses": "m:f", "retries": 10, "retry_backoff": "1s"}}
    capped = _templates(_export(steps, argo_version=(3, 7)))["a"]["retryStrategy"]["backoff"]
    assert capped == {"cap": "300s", "duration": "1s", "factor": "2"}
    check_argo(_export(steps, argo_version=(3, 7)), versions=("3.7", "4.1"))
    short = {"a": {"uses": "m:f", "retries": 3, "retry_backoff": "1s"}}
    assert "cap" not in _templates(_export(short, argo_version=(4, 1)))["a"]["retryStrategy"]["backoff"]
    message = _refusal(steps)
    assert (
        "steps.a.retry_backoff: does not translate to Argo: retries: 10 with retry_backoff 1s waits"
        in message
    )
    assert "--argo-version 3.7" in message


def test_a_quorum_fan_in_runs_once_its_branches_finished_however_they_ended():
    manifest = yaml.safe_load(golden_path(GOLDEN_EXAMPLES[1]).read_text())
    tasks = _tasks(manifest)
    assert tasks["select"]["depends"] == "(train.Succeeded || train.Failed || train.Errored)"
    assert "continueOn" not in json.dumps(manifest) and "quorum" not in tasks


def test_a_step_that_collects_without_a_quorum_needs_every_branch():
    manifest = _export(
        {
            "a": {"uses": "m:f", "fan_out": {"x": [1, 2]}, "with": {"v": "${item.x}"}},
            "b": {"uses": "m:g", "with": {"all": "${a[*]}"}, "min_success": 1},
            "c": {"uses": "m:g", "with": {"all": "${a[*]}"}},
        }
    )
    assert _tasks(manifest)["b"]["depends"] == "(a.Succeeded || a.Failed || a.Errored)"
    assert _tasks(manifest)["c"]["depends"] == "a.Succeeded"


def test_services_are_rendered_by_a_pod_then_created_and_deleted():
    manifest = yaml.safe_load(golden_path(GOLDEN_EXAMPLES[1]).read_text())
    tasks, templates = _tasks(manifest), _templates(manifest)
    serve = templates["serve"]
    assert [group[0]["name"] for group in serve["steps"]] == ["render", "create"]
    create = templates["serve-create"]
    assert create["resource"]["action"] == "create"
    assert create["resource"]["manifest"] == "{{inputs.parameters.resource}}"
    assert create["resource"]["successCondition"] == render.READY
    assert create["activeDeadlineSeconds"] == "300"  # ready_timeout: 5m
    assert tasks["serve"]["withSequence"]["count"] == "{{tasks.select.outputs.parameters.width-serve}}"
    assert "--service" in templates["serve-render"]["container"]["args"]
    assert tasks["gateway"]["depends"] == "serve.Succeeded"
    assert (
        _templates(yaml.safe_load(golden_path(GOLDEN_EXAMPLES[2]).read_text()))["gateway-create"][
            "activeDeadlineSeconds"
        ]
        == "600"
    )  # no ready_timeout: time for a first image pull
    cleanup = templates[manifest["spec"]["onExit"]]
    assert cleanup["resource"]["action"] == "delete"
    assert "fanflow.dev/run={{workflow.name}}" in cleanup["resource"]["flags"]
    kept = render.export(
        load_workflow(EXAMPLES / "quorum_serve.yaml", check_imports=False), image=IMAGE, artifacts=STORE,
        keep_services=True,
    )  # fmt: skip
    assert "onExit" not in kept["spec"]
    assert "setOwnerReference" not in _templates(kept)["serve-create"]["resource"]


def test_conditions_are_decided_by_the_first_pod_that_knows_their_values():
    manifest = _export(
        {
            "a": {"uses": "m:f", "when": "${params.go} and len(${params.xs}) >= 2"},
            "b": {"uses": "m:g", "with": {"v": "${a}"}, "when": "${a.score} > 0.5 or ${params.k} in [1, 2]"},
            "c": {"uses": "m:g", "with": {"v": "${b}"}},
            "d": {"uses": "m:g", "when": False},
        },
        params={"go": True, "xs": [1, 2], "k": 3},
    )
    tasks, templates = _tasks(manifest), _templates(manifest)
    verdict_a = "{{tasks.begin.outputs.parameters.when-a}}"
    verdict_b = "{{tasks.a.outputs.parameters.when-b}}"
    assert tasks["a"]["when"] == verdict_a
    assert tasks["b"]["when"] == f"({verdict_a}) && ({verdict_b})"
    assert tasks["c"]["when"] == f"({verdict_a}) && ({verdict_b})"  # skipped with what it depends on
    assert tasks["d"]["when"] == "false"
    assert "a=/tmp/fanflow/decisions/when-a" in templates["begin"]["container"]["args"]
    assert "b=/tmp/fanflow/decisions/when-b" in templates["a"]["container"]["args"]
    check_argo(manifest)


@pytest.mark.parametrize(
    ("steps", "field", "words"),
    [
        ({"b": {"uses": "m:g", "when": "${a[*]} == []"}}, "steps.b.when", "every branch of a fan-out"),
        (
            {
                "s": {
                    "uses": "fanflow.serving.model_server:serve_model",
                    "kind": "service",
                    "with": {"model": "${a}"},
                },
                "b": {"uses": "m:g", "when": "${s.url} == 'x'"},
            },
            "steps.b.when",
            "which is a service",
        ),
        (
            {"c": {"uses": "m:f"}, "b": {"uses": "m:g", "when": "${a} == ${c}"}},
            "steps.b.when",
            "run independently",
        ),
        ({"b": {"uses": "m:g", "fan_out": {"y": "${a[*]}"}}}, "steps.b.fan_out", "collecting reference"),
        ({"b": {"uses": "m:g", "on_failure": "continue"}}, "steps.b.on_failure", "failFast"),
        (
            {"b": {"uses": "m:g", "with": {"all": "${a[*]}"}, "min_success": 1, "wait": "quorum"}},
            "steps.b.wait",
            "wait: quorum",
        ),
    ],
)
def test_what_does_not_translate_is_refused_by_step_and_field(steps, field, words):
    base = (
        {"a": {"uses": "m:f", "fan_out": {"x": [1, 2]}}}
        if "a[*]" in json.dumps(steps)
        else {"a": {"uses": "m:f"}}
    )
    message = _refusal({**base, **steps})
    assert f"{field}: does not translate to Argo" in message
    assert words in message


@pytest.mark.parametrize(
    ("service", "field", "words"),
    [
        ({"uses": "m:serve"}, "steps.s.uses", "fanflow's model server"),
        ({"with": {"model": "${a}", "colour": "red"}}, "steps.s.with", "takes no colour"),
        ({"with": {"model": "${a}", "port": 9090}}, "steps.s.with.port", "taken by Knative"),
        ({"with": {"model": "${a}", "port": 70000}}, "steps.s.with.port", "from 1 to 65535"),
        ({"retries": 2}, "steps.s.retries", "KServe restarts"),
        ({"timeout": 30}, "steps.s.timeout", "runs until the workflow ends"),
    ],
)
def test_service_steps_that_do_not_translate_are_refused(service, field, words):
    step = {"uses": "fanflow.serving.model_server:serve_model", "kind": "service", "with": {"model": "${a}"}}
    message = _refusal({"a": {"uses": "m:f"}, "s": {**step, **service}})
    assert f"{field}: does not translate to Argo" in message and words in message


def test_names_are_lower_case_dns_names_and_collisions_name_both_steps():
    manifest = _export({"Train_Models": {"uses": "m:f"}, "sub/step": {"uses": "m:g"}})
    assert set(_tasks(manifest)) == {"begin", "train-models", "sub-step"}
    check_argo(manifest)
    message = _refusal({"a_b": {"uses": "m:f"}, "A-b": {"uses": "m:g"}})
    assert "steps.A-b.name: does not translate to Argo: 'A-b' and 'a_b' are both 'a-b' on Argo" in message
    assert _tasks(_export({"begin": {"uses": "m:f"}}))["begin"]["depends"] == "begin-1.Succeeded"


def test_names_past_kubernetes_and_argo_limits_are_refused_naming_the_limit():
    message = _refusal({"s" * 64: {"uses": "m:f"}})
    assert (
        f"steps.{'s' * 64}.name: does not translate to Argo: Kubernetes label values hold at most 63"
        in message
    )
    assert "Argo names" not in message
    message = _refusal({"s" * 125: {"uses": "m:f"}})
    assert "Argo names tasks and templates with at most 128 characters" in message
    check_argo(_export({"s" * 63: {"uses": "m:f", "fan_out": {"x": [1]}, "parallelism": 1}}))


def test_parameter_values_argo_would_substitute_are_refused():
    message = _refusal({"a": {"uses": "m:f"}}, params={"greeting": "hello {{workflow.name}}"})
    assert "params.greeting: does not translate to Argo" in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as caught:
        _export(
            {
                "x": {"uses": "m:f", "fan_out": {"i": [1, 2]}},
                "a": {"uses": "m:f", "when": "${x[*]} == []", "on_failure": "continue"},
            }
        )
    assert {issue.field for issue in caught.value.issues} == {"steps.a.when", "steps.a.on_failure"}


def test_parameters_are_argo_parameters_with_their_defaults_as_text():
    manifest = _export(
        {"a": {"uses": "m:f", "with": {"v": "${params.n}"}}},
        params={
            "n": {"type": "float", "default": 1},
            "s": {"type": "str", "default": "8"},
            "l": [1, "a"],
            "t": {"type": "str", "choices": ["x", "y"]},
            "b": True,
        },
    )
    params = {p["name"]: p for p in manifest["spec"]["arguments"]["parameters"]}
    assert params["n"]["value"] == "1" and params["s"]["value"] == "8" and params["l"]["value"] == '[1,"a"]'
    assert "value" not in params["t"] and params["t"]["enum"] == ["x", "y"]
    assert params["b"]["enum"] == ["true", "false"]


def test_a_service_account_runs_every_pod_and_gets_the_rights_it_needs(tmp_path):
    out, rbac = tmp_path / "wf.yaml", tmp_path / "rbac.yaml"
    result = run_kube(
        "export", "argo", REFERENCE, "--image", IMAGE, "--artifacts", STORE, "-n", "ml",
        "--service-account", "fanflow-runner", "--rbac-output", rbac, "-o", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(out.read_text())
    assert manifest["spec"]["serviceAccountName"] == "fanflow-runner"
    check_argo(manifest)
    account, role, binding = yaml.safe_load_all(rbac.read_text())
    assert [d["kind"] for d in (account, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    rules = {r["resources"][0]: set(r["verbs"]) for r in role["rules"]}
    assert rules["workflowtaskresults"] == {"create", "patch"}  # Argo 3.4+ executors report outputs so
    assert {"create", "get", "delete"} <= rules["inferenceservices"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fanflow-runner", "namespace": "ml"}]
    for document in (account, role, binding):
        check_kubernetes(document)
    plain = render.export_rbac(load_workflow(FANOUT / "workflow.yaml"), image=IMAGE, artifacts=STORE,
                               service_account="r")  # fmt: skip
    assert [r["resources"] for r in plain[1]["rules"]] == [["workflowtaskresults"]]


def test_an_installed_workflow_exports_by_name(tmp_path):
    result = run_kube("export", "argo", "video-entity-tagging", "--image", IMAGE, "--artifacts", STORE)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["metadata"]["generateName"] == "video-entity-tagging-"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["examples/fanout_sum/workflow.yaml", "--artifacts", "/data/store"], "pods share no folder"),
        (["missing.yaml", "--artifacts", STORE], "no such workflow file"),
        (["no-such-workflow", "--artifacts", STORE], "no-such-workflow: no such file"),
        (["examples/fanout_sum/workflow.yaml", "--artifacts", STORE, "--argo-version", "3.3"], "3.4 to 4.1"),
        (
            ["examples/fanout_sum/workflow.yaml", "--artifacts", STORE, "--rbac-output", "r.yaml"],
            "--service-account",
        ),
    ],
)
def test_bad_options_are_one_line_with_exit_code_2(args, words):
    result = run_kube("export", "argo", *args, "--image", IMAGE)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_a_refusal_from_the_command_line_names_the_file_step_and_field(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text("name: w\nsteps:\n  a:\n    uses: json:dumps\n    with: {obj: 1}\n    on_failure: continue\n")
    result = run_kube("export", "argo", path, "--image", IMAGE, "--artifacts", STORE)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: steps.a.on_failure: does not translate to Argo: on_failure: continue differs from "
        "the workflow's fail_fast; Argo's failFast holds for the whole DAG"
    ]
    assert result.stdout == ""


def test_the_commands_register_in_the_main_command_line(tmp_path):
    """The lines that add these commands to ``fanflow`` (fanflow/cli/main.py) work."""
    from typer.testing import CliRunner

    from fanflow.cli.main import app

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
    assert CliRunner().invoke(app, ["exec", "--help"]).exit_code == 0


def test_export_options_are_checked_before_anything_is_planned():
    with pytest.raises(plan.ExportOptionError, match="--image"):
        render.export(load_workflow(FANOUT / "workflow.yaml"), image="", artifacts=STORE)
    with pytest.raises(plan.ExportOptionError, match="rewrite"):
        render.export(load_workflow(FANOUT / "workflow.yaml"), image=IMAGE, artifacts="s3://b/$(X)")


def test_steps_whose_templates_would_share_a_name_are_refused():
    message = _refusal(
        {"a": {"uses": "m:f", "fan_out": {"x": [1, 2]}, "parallelism": 1}, "a-loop": {"uses": "m:g"}}
    )
    assert "steps.a-loop.name: does not translate to Argo: its template 'a-loop' is also 'a''s" in message


def test_a_preset_exports_as_the_parameters_defaults_and_without_one_the_defaults_stay(tmp_path):
    out = tmp_path / "quick.yaml"
    result = run_kube("export", "argo", REFERENCE, "--preset", "quick", "--image", IMAGE, "--artifacts", STORE,
                      "-o", out)
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(out.read_text())
    check_argo(manifest)
    values = {p["name"]: p.get("value") for p in manifest["spec"]["arguments"]["parameters"]}
    assert values["epochs"] == "1" and values["models"] == '["cnn_even","logistic"]'
    assert "not meaningful" in values["caveat"]
    plain = {p["name"]: p.get("value") for p in
             render.export(load_workflow(REFERENCE), image=IMAGE, artifacts=STORE)["spec"]["arguments"]["parameters"]}
    assert plain["epochs"] == "8" and plain["caveat"] == ""
    unknown = run_kube("export", "argo", REFERENCE, "--preset", "fast", "--image", IMAGE, "--artifacts", STORE)
    assert unknown.returncode == 2
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown preset 'fast'" in lines[0] and "valid: quick" in lines[0]
