"""Progress a step reports while it runs (``fanflow.progress``, ``fanflow.log``): it reaches
the run store from a worker process, a thread of the engine's process and a Ray worker, while
the task still runs; ``fanflow show`` and the ``Run`` object read it back; ``fanflow logs -f``
follows a running task's output; bad arguments get one clear error."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fanflow
from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from tests.conftest import cli, write

STEPS = """
import time
from pathlib import Path

import numpy as np

import fanflow


def train(epochs: int, gate: str) -> dict:
    for epoch in range(1, epochs + 1):
        fanflow.progress(epoch, epochs, unit="epochs", val=np.float32(epoch / 10), loss=1.0 / epoch)
        print(f"epoch {epoch} of {epochs}", flush=True)
    fanflow.log("waiting for", gate=Path(gate).name)
    while not Path(gate).exists():
        time.sleep(0.02)
    print("through the gate", flush=True)
    return {"epochs": epochs}


def misreport() -> None:
    fanflow.progress(12, 10, unit="epochs")
"""

FLOW = """
name: reporting
steps:
  a: {{uses: reportsteps:train, with: {{epochs: 3, gate: "{gate}"}}}}
  b: {{uses: reportsteps:train, executor: thread, with: {{epochs: 2, gate: "{gate}"}}}}
"""

WAIT = 120  # seconds a test waits for something that comes within a second or two


def _wait_for(check, what: str):
    deadline = time.time() + WAIT
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


class Background:
    """A run of the engine on a thread of this process (the store is read from another
    connection, as a second process would)."""

    def __init__(self, home, path, executor: str):
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(home, path, executor), daemon=True)
        self.thread.start()

    def _run(self, home, path, executor):
        project = Project(home)
        try:
            self.result = project.run(load_workflow(path), executor=executor)
        except BaseException as exc:
            self.error = exc
        finally:
            project.close()

    def join(self):
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the run did not end"
        if self.error is not None:
            raise self.error
        return self.result


def _running_progress(home, task: str, done: int):
    """The run's id once ``task``'s progress in the store says ``done``, while it runs."""
    project = Project(home)
    try:
        rows = project.store.list_runs(1)
        if not rows:
            return None
        progress = project.store.progress(rows[0].id).get(task)
        return rows[0].id if progress is not None and progress.done == done else None
    finally:
        project.close()


def test_progress_reaches_the_store_while_tasks_run_and_the_run_reads_it_back(executor, workdir, home, tmp_path):
    write(workdir, "reportsteps.py", STEPS)
    gate = tmp_path / "gate"
    run = Background(home, write(workdir, "flow.yaml", FLOW.format(gate=gate)), executor)
    try:
        run_id = _wait_for(lambda: _running_progress(home, "a", 3) and _running_progress(home, "b", 2),
                           "both tasks' progress in the run store")
        project = Project(home)
        try:  # the gate is shut: both tasks are still running
            assert project.get_run(run_id).state == "running"
            assert project.store.task_state(run_id, "a")[0] == "running"
            a = project.store.progress(run_id)["a"]
        finally:
            project.close()
        assert (a.done, a.total, a.unit, a.fraction) == (3, 3, "epochs", 1.0)
        assert a.metrics == {"val": pytest.approx(0.3), "loss": pytest.approx(1 / 3)}
        shown = cli("show", run_id, "--home", home, check=True).stdout
        assert "3/3 epochs  val 0.3 loss 0.333" in shown, shown
        assert "2/2 epochs  val 0.2 loss 0.5" in shown, shown
    finally:
        gate.touch()
    result = run.join()
    assert result.state == "succeeded", result.error

    done = fanflow.Run.get(run_id, home=home)
    a, b = done.tasks["a"], done.tasks["b"]
    assert (a.progress.done, a.progress.total, a.progress.unit) == (3, 3, "epochs")
    assert a.metrics == {"val": pytest.approx(0.3), "loss": pytest.approx(1 / 3)}
    assert a.progress.message == "waiting for gate=gate"
    assert a.progress.series("loss") == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert b.metrics == {"val": pytest.approx(0.2), "loss": 0.5} and b.progress.attempt == 1
    as_json = cli("show", run_id, "--json", "--home", home, check=True).stdout
    assert '"unit": "epochs"' in as_json and '"fraction": 1.0' in as_json


def test_logs_follow_prints_a_running_tasks_lines_before_it_ends(workdir, home, tmp_path):
    write(workdir, "reportsteps.py", STEPS)
    gate = tmp_path / "gate"
    run = Background(home, write(workdir, "flow.yaml", FLOW.format(gate=gate)), "local")
    follower = None
    try:
        run_id = _wait_for(lambda: _running_progress(home, "a", 3), "task a's progress")
        follower = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "logs", run_id, "a", "-f",
                                     "--home", str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        lines = [follower.stdout.readline() for _ in range(3)]
        assert lines == ["epoch 1 of 3\n", "epoch 2 of 3\n", "epoch 3 of 3\n"]
        assert follower.poll() is None  # still following: the task has not ended (its gate is shut)
        assert Project(home).store.task_state(run_id, "a")[0] == "running"
    finally:
        gate.touch()
    assert run.join().state == "succeeded"
    rest, errors = follower.communicate(timeout=WAIT)
    assert follower.returncode == 0
    assert "through the gate\n" in rest  # written after the gate opened, printed as it came
    assert "waiting for gate=gate" in rest  # stderr, under its header
    assert "── a succeeded ──" in errors


def test_the_live_commands_say_what_a_step_without_output_has_not_written_yet(workdir, home, tmp_path):
    write(workdir, "reportsteps.py", STEPS)
    gate = tmp_path / "gate"
    run = Background(home, write(workdir, "flow.yaml", FLOW.format(gate=gate)), "local")
    try:
        run_id = _wait_for(lambda: _running_progress(home, "b", 2), "task b's progress")
        said = cli("logs", run_id, "b", "--home", home)  # a thread task has no log files
        assert said.returncode == 0
        assert f"no output yet (to follow it: fanflow logs -f {run_id} 'b')" in said.stderr
    finally:
        gate.touch()
    assert run.join().state == "succeeded"


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: fanflow.progress("3", 10), TypeError, "done must be a number, got str '3'"),
    (lambda: fanflow.progress(True), TypeError, "done must be a number, got bool"),
    (lambda: fanflow.progress(3, None, unit=5), TypeError, "unit must be a word such as 'epochs', got 5"),
    (lambda: fanflow.progress(loss=[0.1]), TypeError, "loss must be a number, got list"),
    (lambda: fanflow.progress(12, 10), ValueError, r"done \(12\) is more than total \(10\)"),
    (lambda: fanflow.progress(-1), ValueError, "done must be a finite number of at least 0, got -1"),
    (lambda: fanflow.progress(1, float("inf")), ValueError, "total must be a finite number of at least 0"),
])
def test_bad_arguments_get_one_clear_error(call, error, message):
    with pytest.raises(error, match=f"^fanflow.progress: {message}"):
        call()


def test_numbers_of_other_libraries_are_metrics_and_outside_a_task_a_report_goes_nowhere():
    fanflow.progress(np.int64(2), np.float32(4.0), unit="rounds", val=np.float64(0.5), n=np.int32(3))
    fanflow.progress(loss=float("nan"))  # a diverged loss is a value, kept as missing


def test_a_step_that_reports_wrongly_fails_with_the_error_named(workdir, home):
    write(workdir, "reportsteps.py", STEPS)
    project = Project(home)
    try:
        result = project.run(load_workflow(write(workdir, "bad.yaml", "name: bad\nsteps:\n  m: {uses: reportsteps:misreport}\n")))
    finally:
        project.close()
    assert result.state == "failed"
    assert "ValueError: fanflow.progress: done (12) is more than total (10)" in result.error
