"""Real runs: worker processes, artifacts, timeouts, retries, quorum, cancellation, caching."""

import gc
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fanflow.project import Project
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import load_workflow
from fanflow.stores.artifacts import ArtifactStore
from fanflow.stores.values import decode
from fanflow.vocab.states import State
from tests.conftest import ROOT, cli, write
from tests.engine.drive import run_workflow as run

STEPS = Path(__file__).with_name("flowsteps.py")


@pytest.fixture
def flow(workdir):
    """Write a workflow file (with the test step module beside it) and load it."""
    shutil.copy(STEPS, workdir / "flowsteps.py")

    def make(text: str, name: str = "flow.yaml"):
        return load_workflow(write(workdir, name, text))

    return make




FANOUT = """
name: squares
params: {n: 4, delay: 0.0, marks: "", fail_on: []}
steps:
  numbers:
    uses: flowsteps:numbers
    with: {n: "${params.n}", marks: "${params.marks}"}
  square:
    uses: flowsteps:square
    fan_out: {x: "${numbers}"}
    with: {x: "${item.x}", delay: "${params.delay}", marks: "${params.marks}", fail_on: "${params.fail_on}"}
  total:
    uses: flowsteps:total
    with: {values: "${square[*]}", marks: "${params.marks}"}
"""


def test_fan_out_and_fan_in_in_real_worker_processes(flow, home, executor):
    result = run(home, flow(FANOUT), executor, params={"n": 4, "delay": 0.5})
    assert result.state == "succeeded", result.error
    assert result.outputs("total") == [{"sum": 1 + 4 + 9 + 16, "xs": [1, 2, 3, 4]}]
    branches = result.outputs("square")
    assert len({b["pid"] for b in branches}) >= 2 and all(b["pid"] != os.getpid() for b in branches)
    overlap = any(a["started"] < b["ended"] and b["started"] < a["ended"]
                  for a in branches for b in branches if a is not b)
    assert overlap, "branches did not run in parallel"


def test_every_task_and_attempt_is_in_the_run_store(flow, home, executor):
    result = run(home, flow(FANOUT), executor)
    store = Project(home).store
    tasks = {t["name"]: t for t in store.tasks(result.run_id)}
    assert set(tasks) == set(result.tasks)
    assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in tasks.values())
    assert tasks["total"]["output"] == {"sum": 30, "xs": [1, 2, 3, 4]}
    attempts = store.attempts(result.run_id)
    assert len(attempts) == len(tasks) and all(a["ended"] >= a["started"] for a in attempts)
    run_row = store.get_run(result.run_id)
    assert run_row.state == "succeeded" and run_row.params["n"] == 4


def test_a_run_collects_garbage_less_often_and_leaves_the_collector_as_it_found_it(flow, home):
    seen = []  # (thresholds, objects frozen) while the run records its events

    def listener(events):
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    before = gc.get_threshold()
    project = Project(home)
    try:
        result = project.run(flow(FANOUT), listeners=[listener])
    finally:
        project.close()
    assert result.state == "succeeded", result.error
    assert seen and all(thresholds[0] > before[0] and frozen > 0 for thresholds, frozen in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_large_array_is_written_once_and_memory_mapped_by_every_branch(flow, home, executor):
    spec = flow("""
        name: shared
        steps:
          make: {uses: flowsteps:big_array, with: {mb: 8}}
          read:
            uses: flowsteps:read_array
            fan_out: {i: [0, 1, 2]}
            with: {data: "${make}", index: "${item.i}"}
        """)
    result = run(home, spec, executor)
    assert result.state == "succeeded", result.error
    reads = result.outputs("read")
    assert all(r["memmap"] and not r["writeable"] for r in reads)
    assert len({r["file"] for r in reads}) == 1 and "/artifacts/objects/" in reads[0]["file"]
    assert reads[0]["sum"] == 1.5 * 8 * 2**20 / 8
    assert len(list((home / "artifacts" / "objects").glob("*/*.npy"))) == 1


def test_a_hung_task_is_killed_with_its_children_and_retried(flow, home, tmp_path, executor):
    pid_file = tmp_path / "child.pid"
    spec = flow(f"""
        name: hang
        steps:
          stuck:
            uses: flowsteps:hang_with_child
            with: {{pid_file: "{pid_file}"}}
            timeout: 1.5s
            retries: 1
            retry_backoff: 0.1
        """)
    started = time.time()
    result = run(home, spec, executor)
    assert time.time() - started < 30
    task = result.tasks["stuck"]
    assert task.state is State.FAILED and task.attempt == 2
    assert task.error == "timed out after 1.5s"
    child = int(pid_file.read_text())
    deadline = time.time() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    attempts = Project(home).store.attempts(result.run_id, "stuck")
    assert [a["exit_reason"] for a in attempts] == ["timeout", "timeout"]


def test_retries_recover_from_a_transient_failure(flow, home, tmp_path, executor):
    spec = flow(f"""
        name: retry
        steps:
          shaky: {{uses: flowsteps:flaky, with: {{marker: "{tmp_path / 'm'}", succeed_on: 3}}, retries: 2, retry_backoff: 0.05}}
        """)
    result = run(home, spec, executor)
    assert result.state == "succeeded" and result.outputs("shaky") == [3]
    attempts = Project(home).store.attempts(result.run_id, "shaky")
    assert [a["state"] for a in attempts] == ["retrying", "retrying", "succeeded"]
    assert "transient failure on attempt 1" in attempts[0]["error"]
    assert "Traceback" in attempts[0]["traceback"]


def test_quorum_fan_in_gets_the_survivors_and_the_run_reports_the_failures(flow, home, executor):
    spec = flow(FANOUT.replace('values: "${square[*]}", marks: "${params.marks}"}',
                               'values: "${square[*]}", marks: "${params.marks}"}\n    min_success: 3'))
    result = run(home, spec, executor, params={"fail_on": [2]})
    assert result.state == "succeeded", result.error
    assert result.outputs("total") == [{"sum": 1 + 9 + 16, "xs": [1, 3, 4]}]
    assert result.tasks["square[x=2]"].error == "ValueError: cannot square 2"


def test_quorum_not_met_fails_the_run_with_a_message_that_says_so(flow, home, executor):
    spec = flow(FANOUT.replace('values: "${square[*]}", marks: "${params.marks}"}',
                               'values: "${square[*]}", marks: "${params.marks}"}\n    min_success: 3'))
    result = run(home, spec, executor, params={"fail_on": [1, 2]})
    assert result.state == "failed"
    assert "quorum can no longer be met: " in result.error and "3 needed" in result.error
    assert "square[x=1]: ValueError: cannot square 1" in result.error


def test_fail_fast_stops_running_siblings_quickly(flow, home, executor):
    started = time.time()
    result = run(home, flow("""
        name: ff
        steps:
          a: {uses: flowsteps:fail_unless, with: {flag: /nonexistent/flag}}
          b: {uses: flowsteps:slow, with: {seconds: 60}}
          c: {uses: flowsteps:slow, with: {seconds: 0}, needs: [a]}
        """), executor)
    assert time.time() - started < 20
    assert result.state == "failed" and result.error.startswith("a: RuntimeError: /nonexistent/flag is missing")
    assert result.tasks["b"].state is State.CANCELLED
    assert result.tasks["c"].state is State.SKIPPED and result.tasks["c"].reason == "upstream a failed"


def test_continue_policy_lets_independent_branches_finish(flow, home, executor):
    result = run(home, flow("""
        name: cont
        on_failure: continue
        steps:
          a: {uses: flowsteps:fail_unless, with: {flag: /nonexistent/flag}}
          b: {uses: flowsteps:slow, with: {seconds: 0.2, x: 7}}
          c: {uses: flowsteps:slow, with: {seconds: 0, x: "${a}"}}
        """), executor)
    assert result.state == "failed"
    assert result.tasks["b"].state is State.SUCCEEDED and result.outputs("b") == [7]
    assert result.tasks["c"].state is State.SKIPPED and result.tasks["c"].reason == "upstream a failed"


def test_thread_steps_run_in_the_engine_process(flow, home):
    result = run(home, flow("""
        name: threads
        steps:
          light: {uses: flowsteps:where, executor: thread}
          heavy: {uses: flowsteps:where}
        """))
    assert result.outputs("light")[0]["pid"] == os.getpid()
    assert result.outputs("heavy")[0]["pid"] != os.getpid()


def test_thread_tasks_each_see_their_own_task_name_and_scratch_folder(flow, home):
    result = run(home, flow("""
        name: thread-scratch
        steps:
          note:
            uses: flowsteps:scratch_note
            fan_out: {x: [1, 2, 3, 4, 5, 6, 7, 8]}
            with: {x: "${item.x}"}
            executor: thread
            resources: {cpus: 0.5}
        """))
    assert result.state == "succeeded", result.error
    store = ArtifactStore(home / "artifacts")
    for task in result.tasks.values():
        output = decode(task.output, store)
        assert output["task"] == task.name
        assert output["file"].read_text() == f"{task.name} {task.item['x']}"
    assert "FANFLOW_TASK" not in os.environ  # the engine's own environment is untouched


@pytest.mark.timeout(120)
def test_a_thread_step_whose_error_escapes_the_task_body_fails_and_never_hangs_the_run(flow, home):
    result = run(home, flow("name: escapes\nsteps:\n  a: {uses: flowsteps:interrupted, executor: thread}\n"))
    assert result.state == "failed"
    assert "KeyboardInterrupt: the step gave up" in result.tasks["a"].error


def test_a_step_returning_something_unstorable_fails_clearly(flow, home):
    result = run(home, flow("name: bad\nsteps:\n  a: {uses: flowsteps:bad_output}\n"))
    assert result.state == "failed"
    assert "a output: cannot store a builtins.object" in result.tasks["a"].error


def test_wrong_arguments_name_the_step_function(flow, home, workdir):
    text = "name: args\nsteps:\n  a: {uses: flowsteps:slow, with: {secs: 1}}\n"
    with pytest.raises(SpecError, match="flowsteps:slow takes no argument 'secs'"):
        flow(text)  # read from the function's source, before anything runs
    unchecked = load_workflow(write(workdir, "unchecked.yaml", text), check_imports=False)
    result = run(home, unchecked)  # and still refused, not retried, when the task runs
    assert "flowsteps:slow cannot take the step's 'with'" in result.tasks["a"].error
    assert result.tasks["a"].attempt == 1


def test_resources_beyond_the_machine_are_refused_up_front(flow, home):
    result = run(home, flow("name: big\nsteps:\n  a: {uses: flowsteps:where, resources: {cpus: 512}}\n"))
    assert result.state == "failed" and "step a asks for 512 cpus; the local executor has" in result.error


def test_task_output_is_captured_per_attempt_and_shown_by_logs(flow, home, workdir):
    spec = flow("name: talk\nsteps:\n  say: {uses: flowsteps:talk, with: {text: hello}}\n")
    result = run(home, spec)
    logs = cli("logs", result.run_id, "say", "--home", home, check=True)
    assert "out: hello" in logs.stdout and "child: hello" in logs.stdout and "err: hello" in logs.stdout


def test_sigint_cancels_the_run_kills_tasks_and_records_cancelled(flow, home, workdir, tmp_path):
    pid_file = tmp_path / "child.pid"
    write(workdir, "hang.yaml", f"""
        name: hang
        steps:
          stuck: {{uses: flowsteps:hang_with_child, with: {{pid_file: "{pid_file}"}}}}
        """)
    shutil.copy(STEPS, workdir / "flowsteps.py")
    process = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "run", "hang.yaml", "--home", str(home)],
                               cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pid_file.exists(), "the task never started"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "cancelled by SIGINT" in stderr
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    row = Project(home).store.list_runs(1)[0]
    assert row.state == "cancelled"
    assert Project(home).store.tasks(row.id)[0]["state"] == "cancelled"


def test_the_example_workflow_runs_from_the_command_line(home):
    result = cli("run", ROOT / "examples/fanout_sum/workflow.yaml", "-p", "delay=0", "--home", home, "--json",
                 check=True)
    import json

    assert json.loads(result.stdout)["results"]["total"] == {"sum": 204, "count": 8}
