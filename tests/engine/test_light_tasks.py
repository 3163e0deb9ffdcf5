"""Tiny tasks: once a step proves to be made of them, more are kept in flight and queued
behind one another in the local workers; the results and the failure semantics stay the same."""

import shutil
from pathlib import Path

from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.vocab.states import State
from tests.conftest import write

STEPS = Path(__file__).with_name("flowsteps.py")

FLOW = """
name: tiny
params: {{n: 300, crash_on: -1, fail_on: -1, crash_marker: ""}}
on_failure: {policy}
steps:
  numbers: {{uses: flowsteps:numbers, with: {{n: "${{params.n}}"}}}}
  tiny:
    uses: flowsteps:tiny
    fan_out: {{x: "${{numbers}}"}}
    with: {{x: "${{item.x}}", crash_on: "${{params.crash_on}}", fail_on: "${{params.fail_on}}", crash_marker: "${{params.crash_marker}}"}}
    retries: {retries}
  total:
    uses: flowsteps:numbers
    with: {{n: 1}}
    needs: [tiny]
"""


def _run(workdir, home, policy="fail_fast", retries=0, **params):
    shutil.copy(STEPS, workdir / "flowsteps.py")
    spec = load_workflow(write(workdir, "tiny.yaml", FLOW.format(policy=policy, retries=retries)))
    project = Project(home)
    runner = project.runner(spec, params=params, cache=False)
    return runner, runner.run()


def test_a_step_of_tiny_tasks_turns_light_and_gives_every_output_in_order(workdir, home):
    runner, result = _run(workdir, home)
    assert result.state == "succeeded"
    assert "tiny" in runner.light.steps
    assert [t.output for t in result.tasks.values() if t.step == "tiny"] == list(range(1, 301))


def test_a_crash_in_a_light_worker_retries_that_task_and_requeues_the_ones_behind_it(workdir, home, tmp_path):
    _, result = _run(workdir, home, retries=1, crash_on=200, crash_marker=str(tmp_path / "crashed"))
    assert result.state == "succeeded", result.error
    crashed = result.tasks["tiny[x=200]"]
    assert crashed.attempt == 2 and crashed.output == 200
    others = [t for t in result.tasks.values() if t.step == "tiny" and t.name != "tiny[x=200]"]
    assert all(t.attempt == 1 and t.state is State.SUCCEEDED for t in others)


def test_fail_fast_among_light_tasks_stops_the_rest(workdir, home):
    _, result = _run(workdir, home, fail_on=250)
    assert result.state == "failed" and result.error == "tiny[x=250]: ValueError: tiny 250 failed"
    states = {t.state for t in result.tasks.values() if t.step == "tiny"}
    assert states <= {State.SUCCEEDED, State.FAILED, State.CANCELLED}
    assert result.tasks["total"].state is State.CANCELLED
    rows = Project(home).store.tasks(result.run_id)
    assert not [r for r in rows if r["state"] in ("running", "pending")]
