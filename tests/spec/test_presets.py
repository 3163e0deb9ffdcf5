"""Presets: named parameter sets a workflow declares, checked when it is loaded, chosen with
``--preset`` (or ``preset=``), overridden by -p, shown by describe and in the JSON Schema."""

import json

import jsonschema
import pytest
import yaml

import fanflow
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import load_workflow
from fanflow.spec.presets import apply_preset
from fanflow.spec.schema import json_schema
from tests.conftest import cli, write

STEPS = """
def echo(n, label, tags):
    return {"n": n, "label": label, "tags": tags}
"""

WORKFLOW = """
name: presets-demo
params:
  n: {type: int, default: 10}
  label: {type: str, default: full, choices: [full, quick]}
  tags: {type: list, default: [a, b]}
presets:
  quick:
    description: Small and fast; its numbers mean nothing.
    params: {n: 2, label: quick}
  empty: {}
steps:
  echo:
    uses: preset_steps:echo
    with: {n: "${params.n}", label: "${params.label}", tags: "${params.tags}"}
"""


@pytest.fixture
def flow_file(workdir):
    write(workdir, "preset_steps.py", STEPS)
    return write(workdir, "presets.yaml", WORKFLOW)


def _with_presets(workdir, presets: str):
    """The demo workflow with its presets replaced by ``presets`` (YAML text)."""
    text = WORKFLOW.split("presets:")[0] + presets + "steps:" + WORKFLOW.split("steps:", 1)[1]
    return write(workdir, "bad.yaml", text)


def test_a_preset_replaces_the_defaults_and_leaves_the_others(flow_file):
    workflow = apply_preset(load_workflow(flow_file), "quick")
    assert {name: p.default for name, p in workflow.params.items()} == {"n": 2, "label": "quick", "tags": ["a", "b"]}
    assert apply_preset(workflow, None) is workflow
    assert load_workflow(flow_file).params["n"].default == 10  # the loaded workflow is unchanged


def test_an_unknown_preset_is_one_error_naming_the_file_the_preset_and_the_valid_ones(flow_file):
    with pytest.raises(SpecError) as caught:
        apply_preset(load_workflow(flow_file), "quik")
    message = str(caught.value)
    assert str(flow_file) in message and "'quik'" in message and "did you mean 'quick'" in message
    assert "valid: quick, empty" in message
    result = cli("run", flow_file, "--preset", "fast", "--home", flow_file.parent / ".fanflow")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown preset 'fast'" in lines[0] and "valid: quick, empty" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("presets,field,expected", [
    ("presets:\n  quick:\n    params: {m: 2}\n", "presets.quick.params.m", "unknown parameter 'm'"),
    ("presets:\n  quick:\n    params: {n: two}\n", "presets.quick.params.n", "expected a value of type int, got 'two'"),
    ("presets:\n  quick:\n    params: {label: tiny}\n", "presets.quick.params.label",
     "expected one of ['full', 'quick'], got 'tiny'"),
    ("presets:\n  quick:\n    parms: {n: 2}\n", "presets.quick.parms", "did you mean 'params'"),
    ("presets:\n  quick: 3\n", "presets.quick", "valid dictionary"),
    ("presets:\n  no way:\n    params: {n: 2}\n", "presets", "preset name 'no way' must be a name"),
])
def test_a_presets_values_are_checked_like_parameter_values_with_the_line(workdir, presets, field, expected):
    path = _with_presets(workdir, presets)
    with pytest.raises(SpecError) as caught:
        load_workflow(path, check_imports=False)
    issue = caught.value.issues[0]
    assert issue.file == str(path) and issue.field.startswith(field) and issue.line is not None, issue
    assert expected in issue.message, issue


def test_an_int_is_a_float_in_a_preset_as_in_a_default(workdir):
    text = WORKFLOW.replace("n: {type: int, default: 10}", "n: {type: float, default: 10.5}")
    path = write(workdir, "floats.yaml", text)
    assert apply_preset(load_workflow(path, check_imports=False), "quick").params["n"].default == 2


def test_explicit_values_override_the_preset_from_the_command_line(flow_file):
    home = flow_file.parent / ".fanflow"
    result = cli("run", flow_file, "--preset", "quick", "-p", "n=7", "--json", "--home", home, check=True)
    assert json.loads(result.stdout)["results"]["echo"] == {"n": 7, "label": "quick", "tags": ["a", "b"]}
    assert "preset quick: Small and fast; its numbers mean nothing." in result.stderr
    plain = cli("run", flow_file, "--json", "--home", home, check=True)
    assert json.loads(plain.stdout)["results"]["echo"] == {"n": 10, "label": "full", "tags": ["a", "b"]}


def test_explicit_values_override_the_preset_from_python(flow_file):
    home = flow_file.parent / ".fanflow"
    run = fanflow.run(flow_file, preset="quick", label="full", home=home)
    assert run["echo"] == {"n": 2, "label": "full", "tags": ["a", "b"]}
    assert run.params["n"] == 2
    with pytest.raises(SpecError, match="unknown preset 'nope'"):
        fanflow.run(flow_file, preset="nope", home=home)


PY_FLOW = fanflow.flow("py-presets", params={"n": 3}, presets={"quick": {"params": {"n": 1}}})


@PY_FLOW.step()
def double(n: int = fanflow.params.n) -> int:
    return 2 * n


def test_a_flow_written_in_python_declares_presets_too(home):
    assert PY_FLOW.run(home=home)["double"] == 6
    assert PY_FLOW.run(preset="quick", home=home)["double"] == 2


def test_describe_lists_the_presets(flow_file):
    result = cli("describe", flow_file, check=True)
    assert "presets" in result.stdout and "Small and fast" in result.stdout and 'n=2, label="quick"' in result.stdout


def test_the_json_schema_accepts_presets_and_rejects_a_misspelt_key(flow_file):
    schema = json_schema()
    document = yaml.safe_load(flow_file.read_text())
    jsonschema.validate(document, schema)
    document["presets"]["quick"]["parms"] = document["presets"]["quick"].pop("params")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)
