"""The spec: references, the two front ends, parameters and the JSON Schema."""

import json

import jsonschema
import pytest
import yaml

from fanflow.engine.plan import Plan
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import load_workflow, workflow_from_dict
from fanflow.spec.refs import Ref, RefSyntaxError, parse_ref, substitute
from fanflow.spec.schema import json_schema
from tests.conftest import write


@pytest.mark.parametrize("text,ref", [
    ("params.seed", Ref("params", False, ("seed",))),
    ("ingest", Ref("ingest")),
    ("ingest.test.x", Ref("ingest", False, ("test", "x"))),
    ("train[*]", Ref("train", True)),
    ("train[*].metrics.val", Ref("train", True, ("metrics", "val"))),
    ("item.model", Ref("item", False, ("model",))),
    ("select[0].name", Ref("select", False, (0, "name"))),
])
def test_references_parse(text, ref):
    assert parse_ref(text) == ref
    assert str(ref) == "${" + text + "}"


@pytest.mark.parametrize("text", ["", "1abc", "a.", "a[*][*]", "params[*]", "a.b[*]", "a b"])
def test_malformed_references_are_refused(text):
    with pytest.raises(RefSyntaxError):
        parse_ref(text)


def test_substitute_keeps_types_interpolates_text_and_splices_fan_ins():
    values = {"params": {"k": 2, "flag": True}, "a": [1, 2], "b": [3], "c": 4}

    def lookup(ref):
        value = values[ref.root]
        for part in ref.path:
            value = value[part]
        return value

    template = {"k": "${params.k}", "name": "run-${params.k}-${params.flag}", "all": ["${a[*]}", "${b[*]}", "${c}"],
                "literal": "$${not.a.ref}", "nested": {"list": ["x", "${c}"]}}
    assert substitute(template, lookup) == {
        "k": 2, "name": "run-2-true", "all": [1, 2, 3, 4], "literal": "${not.a.ref}", "nested": {"list": ["x", 4]}}


YAML_TWIN = """
name: squares
params:
  n: {type: int, default: 4, description: How many.}
steps:
  numbers:
    uses: squares_flow:numbers
    with: {n: "${params.n}"}
  square:
    uses: squares_flow:square
    fan_out: {x: "${numbers}"}
    with: {x: "${item.x}"}
    retries: 2
    timeout: 30s
  total:
    uses: squares_flow:total
    with: {values: "${square[*]}"}
    min_success: 0.5
"""

PYTHON_TWIN = """
from fanflow import flow, item, params

wf = flow("squares", params={"n": {"type": "int", "default": 4, "description": "How many."}})


@wf.step()
def numbers(n: int = params.n) -> list[int]:
    return list(range(n))


@wf.step(fan_out={"x": numbers.output}, retries=2, timeout="30s")
def square(x: int = item.x) -> int:
    return x * x


@wf.step(min_success=0.5)
def total(values: list[int] = square.all()) -> int:
    return sum(values)
"""


def test_yaml_and_python_front_ends_give_the_same_spec(workdir):
    write(workdir, "squares_flow.py", PYTHON_TWIN)
    from_python = load_workflow(workdir / "squares_flow.py")
    from_yaml = load_workflow(write(workdir, "squares.yaml", YAML_TWIN))
    assert from_python.model_dump() == from_yaml.model_dump()
    assert from_python.steps["square"].timeout == 30.0


def test_python_workflow_runs_end_to_end(workdir, home):
    from fanflow.project import Project

    write(workdir, "squares_flow.py", PYTHON_TWIN)
    result = Project(home).run(load_workflow(workdir / "squares_flow.py"), params={"n": 5})
    assert result.state == "succeeded"
    assert result.outputs("total") == [0 + 1 + 4 + 9 + 16]


def test_a_python_workflow_that_fails_to_import_names_the_line(workdir):
    write(workdir, "broken_flow.py", "from fanflow import flow\nwf = flow('x')\nraise RuntimeError('oops')\n")
    with pytest.raises(SpecError) as info:
        load_workflow(workdir / "broken_flow.py")
    issue = info.value.issues[0]
    assert issue.line == 3 and "RuntimeError: oops" in issue.message


def test_params_shorthand_long_form_required_and_cli_conversion(workdir):
    spec = workflow_from_dict({"name": "p", "params": {
        "k": 2, "ratio": {"type": "float", "default": 0.5}, "models": ["a", "b"], "need": {"type": "str"},
        "on": {"type": "bool", "default": False}}, "steps": {"a": {"uses": "json:dumps", "with": {"obj": 1}}}})
    assert spec.params["k"].type == "int" and spec.params["models"].type == "list"
    assert spec.params["need"].required
    with pytest.raises(SpecError, match="parameter 'need' is required"):
        Plan.build(spec, {})
    plan = Plan.build(spec, {"need": "x", "k": "7", "ratio": "1", "models": "[c, d]", "on": "yes"})
    assert plan.params == {"k": 7, "ratio": 1.0, "models": ["c", "d"], "need": "x", "on": True}


def test_durations_and_memory_sizes_are_read_in_human_units():
    spec = workflow_from_dict({"name": "u", "steps": {"a": {
        "uses": "json:dumps", "with": {"obj": 1}, "timeout": "1h30m", "retry_backoff": "250ms", "resources": {"memory": "1.5Gi"}}}})
    step = spec.steps["a"]
    assert step.timeout == 5400 and step.retry_backoff == 0.25 and step.resources.memory == int(1.5 * 2**30)


def test_json_schema_accepts_valid_files_and_rejects_typos():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    valid = yaml.safe_load(YAML_TWIN)
    jsonschema.validate(valid, schema)
    valid["steps"]["square"]["fan_0ut"] = valid["steps"]["square"].pop("fan_out")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(valid, schema)


def test_schema_command_prints_json(tmp_path):
    from tests.conftest import cli

    result = cli("schema", check=True)
    schema = json.loads(result.stdout)
    assert "fan_out" in json.dumps(schema) and schema["title"] == "fanflow workflow"


def test_modules_next_to_the_workflow_are_importable(workdir):
    write(workdir, "local_steps.py", "def hello(name):\n    return f'hi {name}'\n")
    spec = load_workflow(write(workdir, "w.yaml", "name: w\nsteps:\n  a: {uses: local_steps:hello, with: {name: x}}\n"))
    assert spec.steps["a"].uses == "local_steps:hello"


def test_the_reference_workflow_and_its_python_twin_are_the_same_spec():
    from tests.conftest import ROOT

    folder = ROOT / "examples" / "video_entity_tagging"
    assert load_workflow(folder / "flow.py").model_dump() == load_workflow(folder / "workflow.yaml").model_dump()
