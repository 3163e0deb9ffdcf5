"""Sub-workflows: a step that uses another workflow file runs its steps, inlined."""

import pytest

from fanflow.project import Project
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import load_workflow
from tests.conftest import write

CHILD = """
name: squares
params:
  xs: {type: list, description: Numbers to square.}
  power: {type: int, default: 2}
steps:
  square:
    uses: child_steps:power
    fan_out: {x: "${params.xs}"}
    with: {x: "${item.x}", p: "${params.power}"}
  total:
    uses: child_steps:total
    with: {values: "${square[*]}"}
outputs:
  total: ${total}
  each: ${square[*]}
"""

CHILD_STEPS = """
def power(x, p):
    return x ** p


def total(values):
    return sum(values)
"""


@pytest.fixture
def parent(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    write(lib, "squares.yaml", CHILD)
    write(lib, "child_steps.py", CHILD_STEPS)
    main = tmp_path / "main"
    main.mkdir()
    write(main, "parent_steps.py", "def numbers(n):\n    return list(range(1, n + 1))\n\n\ndef report(t, each):\n    return {'t': t, 'each': each}\n")
    return write(main, "parent.yaml", """
        name: parent
        params: {n: 3}
        steps:
          numbers: {uses: parent_steps:numbers, with: {n: "${params.n}"}}
          sq:
            uses: ../lib/squares.yaml
            with: {xs: "${numbers}", power: 3}
          report:
            uses: parent_steps:report
            with: {t: "${sq.total}", each: "${sq.each}"}
        """)


def test_a_sub_workflow_is_inlined_with_its_parameters_bound(parent):
    spec = load_workflow(parent)
    assert list(spec.steps) == ["numbers", "sq/square", "sq/total", "sq", "report"]
    assert spec.steps["sq/square"].fan_out == {"x": "${numbers}"}
    assert spec.steps["sq/square"].with_ == {"x": "${item.x}", "p": 3}
    assert spec.steps["sq/total"].with_ == {"values": "${sq/square[*]}"}
    assert spec.steps["sq"].with_ == {"outputs": {"total": "${sq/total}", "each": "${sq/square[*]}"}}
    assert len(spec.import_paths) == 2  # the parent's folder and the sub-workflow's


def test_a_sub_workflow_runs_end_to_end_and_is_cached_across_the_boundary(parent, home):
    project = Project(home)
    result = project.run(load_workflow(parent))
    assert result.state == "succeeded", result.error
    assert result.outputs("report") == [{"t": 1 + 8 + 27, "each": [1, 8, 27]}]
    assert "sq/square[x=2]" in result.tasks
    again = project.run(load_workflow(parent))
    assert all(t.cached for t in again.tasks.values() if t.step != "sq")


def test_unknown_and_missing_parameters_name_the_step(tmp_path):
    write(tmp_path, "squares.yaml", CHILD)
    write(tmp_path, "child_steps.py", CHILD_STEPS)
    unknown = write(tmp_path, "a.yaml", "name: a\nsteps:\n  s:\n    uses: squares.yaml\n    with: {xs: [1], pwr: 2}\n")
    with pytest.raises(SpecError, match="the workflow 'squares' has no parameter 'pwr'"):
        load_workflow(unknown)
    missing = write(tmp_path, "b.yaml", "name: b\nsteps:\n  s:\n    uses: squares.yaml\n")
    with pytest.raises(SpecError, match="the workflow 'squares' needs parameter 'xs'"):
        load_workflow(missing)


def test_options_that_belong_inside_the_sub_workflow_are_refused(tmp_path):
    write(tmp_path, "squares.yaml", CHILD)
    write(tmp_path, "child_steps.py", CHILD_STEPS)
    path = write(tmp_path, "a.yaml", "name: a\nsteps:\n  s:\n    uses: squares.yaml\n    retries: 2\n")
    with pytest.raises(SpecError) as info:
        load_workflow(path)
    assert "a step that uses a workflow takes only" in str(info.value) and info.value.issues[0].line == 5


def test_a_workflow_cannot_use_itself(tmp_path):
    path = write(tmp_path, "loop.yaml", "name: loop\nsteps:\n  again: {uses: loop.yaml}\n")
    with pytest.raises(SpecError, match="a workflow cannot use itself"):
        load_workflow(path)


def test_a_missing_sub_workflow_file_is_one_error(tmp_path):
    path = write(tmp_path, "a.yaml", "name: a\nsteps:\n  s: {uses: nowhere.yaml}\n")
    with pytest.raises(SpecError, match="no workflow file"):
        load_workflow(path)


def test_python_front_end_uses_a_sub_workflow(tmp_path, home):
    write(tmp_path, "squares.yaml", CHILD)
    write(tmp_path, "child_steps.py", CHILD_STEPS)
    write(tmp_path, "py_parent.py", """
        from fanflow import flow

        wf = flow("py-parent")
        sq = wf.use("sq", "squares.yaml", with_={"xs": [2, 3]})


        @wf.step()
        def show(t: int = sq["total"]) -> int:
            return t
        """)
    result = Project(home).run(load_workflow(tmp_path / "py_parent.py"))
    assert result.state == "succeeded", result.error
    assert result.outputs("show") == [4 + 9]
