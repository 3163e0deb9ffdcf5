"""Cache keys per function: which edits to the code re-run which tasks (real runs in worker
processes, the code read from real files)."""

import shutil
from pathlib import Path

import pytest

from fanflow.spec.loader import load_workflow
from tests.conftest import write
from tests.engine.drive import run_workflow as run
from tests.engine.flowsteps import count

FLOWSTEPS = Path(__file__).with_name("flowsteps.py")

WORKFLOW = """
name: keys
params: {n: 3, marks: ""}
steps:
  prep: {uses: "steps:prep", with: {n: "${params.n}", marks: "${params.marks}"}}
  square:
    uses: steps:square
    fan_out: {x: "${prep}"}
    with: {x: "${item.x}", marks: "${params.marks}"}
  left: {uses: "steps:left", with: {xs: "${prep}", marks: "${params.marks}"}}
  right: {uses: "steps:right", with: {xs: "${prep}", marks: "${params.marks}"}}
  total:
    uses: steps:total
    with: {squares: "${square[*]}", left: "${left}", right: "${right}", marks: "${params.marks}"}
"""

STEPS = '''
import helpers_left
from flowsteps import mark
from helpers_right import scale

OFFSET = 100


def prep(n, marks):
    mark(marks, "prep")
    return list(range(1, n + 1))


def square(x, marks):
    mark(marks, f"square-{x}")
    return x * x


def left(xs, marks):
    mark(marks, "left")
    return helpers_left.combine(xs)


def right(xs, marks):
    mark(marks, "right")
    return [scale(x) + OFFSET for x in xs]


def total(squares, left, right, marks):
    mark(marks, "total")
    return {"squares": sum(squares), "left": left, "right": sum(right)}
'''

# The same code with comments, blank lines, other quotes and other line breaks.
STEPS_REFORMATTED = '''
# Steps of the cache-key tests.
import helpers_left
from flowsteps import mark
from helpers_right import scale

OFFSET = 100  # added to every right value


def prep(n, marks):
    # one task
    mark(marks, 'prep')

    return list(range(1,
                      n + 1))


def square(x, marks):
    mark(marks, f'square-{x}')  # a branch
    return x*x


def left(xs, marks):
    mark(marks, "left")
    return helpers_left.combine( xs )


def right(xs, marks):
    mark(marks, "right")
    return [scale(x) + OFFSET
            for x in xs]


def total(squares, left, right, marks):
    mark(marks, "total")
    return {"squares": sum(squares), "left": left,
            "right": sum(right)}
'''

ALL_TASKS = ["left", "prep", "right", "square[x=1]", "square[x=2]", "square[x=3]", "total"]


@pytest.fixture
def project(workdir, tmp_path, home):
    shutil.copy(FLOWSTEPS, workdir / "flowsteps.py")
    write(workdir, "steps.py", STEPS)
    write(workdir, "helpers_left.py", "import deep\n\ndef combine(xs):\n    return deep.fold(xs)\n")
    write(workdir, "deep.py", "def fold(xs):\n    return sum(xs)\n")
    write(workdir, "helpers_right.py", "def scale(x):\n    return 10 * x\n")
    spec = load_workflow(write(workdir, "keys.yaml", WORKFLOW))
    marks = str(tmp_path / "marks")

    def go():
        result = run(home, spec, params={"marks": marks})
        assert result.state == "succeeded", result.error
        return result

    first = go()
    assert _ran(first) == ALL_TASKS
    return workdir, go


def _ran(result) -> list[str]:
    return sorted(name for name, task in result.tasks.items() if not task.cached)


def test_comments_and_formatting_re_run_nothing(project):
    folder, go = project
    write(folder, "steps.py", STEPS_REFORMATTED)
    write(folder, "deep.py", "# folding\ndef fold(xs):\n\n    return sum( xs )  # all of them\n")
    assert _ran(go()) == []


def test_a_change_to_the_fan_in_function_re_runs_only_the_fan_in(project, tmp_path):
    folder, go = project
    write(folder, "steps.py", STEPS.replace('"right": sum(right)}', '"right": sum(right), "n": len(squares)}'))
    result = go()
    assert _ran(result) == ["total"]
    assert result.outputs("total") == [{"squares": 14, "left": 6, "right": 360, "n": 3}]
    assert count(tmp_path / "marks", "square-1") == 1 and count(tmp_path / "marks", "total") == 2


def test_a_change_to_a_helper_module_re_runs_the_step_that_imports_it_and_its_dependants(project):
    folder, go = project
    write(folder, "helpers_left.py", "import deep\n\ndef combine(xs):\n    return deep.fold(xs) * 2\n")
    result = go()
    assert _ran(result) == ["left", "total"]
    assert result.outputs("total")[0]["left"] == 12
    # A module the helper imports counts too, transitively.
    write(folder, "deep.py", "def fold(xs):\n    return max(xs)\n")
    result = go()
    assert _ran(result) == ["left", "total"]
    assert result.outputs("total")[0]["left"] == 6
    # So does a module-level constant that one step uses; the other steps do not use it.
    write(folder, "steps.py", STEPS.replace("OFFSET = 100", "OFFSET = 1000"))
    assert _ran(go()) == ["right", "total"]


def test_an_installed_package_counts_by_its_version_not_its_source(workdir, home, tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "shapes").mkdir(parents=True)
    (site / "shapes-1.0.dist-info").mkdir()
    write(site / "shapes", "__init__.py", "def area(x):\n    return x * x\n")
    write(site, "shapes-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: shapes\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # for the worker processes
    write(workdir, "geo.py", "import shapes\n\ndef area(x):\n    return shapes.area(x)\n\ndef other(x):\n    return x\n")
    spec = load_workflow(write(workdir, "geo.yaml", """
        name: geo
        steps:
          area: {uses: "geo:area", with: {x: 3}}
          other: {uses: "geo:other", with: {x: 3}}
        """))
    assert _ran(run(home, spec)) == ["area", "other"]
    write(site / "shapes", "__init__.py", "def area(x):\n    return x * x  # same version, edited in place\n")
    assert _ran(run(home, spec)) == []
    (site / "shapes-1.0.dist-info").rename(site / "shapes-1.1.dist-info")  # pip installs 1.1
    write(site, "shapes-1.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: shapes\nVersion: 1.1\n")
    assert _ran(run(home, spec)) == ["area"]
