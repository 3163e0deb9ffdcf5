"""Reading a project's runs (``fanflow.history``), on SQLite and on a real PostgreSQL server:
filtered and sorted lists, task states, attempts, inputs, and where logs are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from fanflow.history import History, log_path
from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from tests.stores.test_run_store import db_url  # noqa: F401 - the store on SQLite and PostgreSQL
from tests.ui.conftest import FLOWS, PAGES

XSS = "<script>alert(1)</script>"


@pytest.fixture
def runs(db_url, tmp_path):  # noqa: F811
    project = Project(tmp_path / ".fanflow", db=db_url)
    flow = load_workflow(PAGES)
    results = [project.run(flow, params={"n": n}) for n in (2, 4, 3)]
    yield project, results
    project.close()


def test_runs_are_found_by_workflow_state_and_text_and_sorted(runs):
    project, (two, four, three) = runs
    history = History(project)
    assert [r.id for r in history.find()] == [three.run_id, four.run_id, two.run_id]
    assert [r.id for r in history.find(sort="started", descending=False)] == [two.run_id, four.run_id, three.run_id]
    assert [r.id for r in history.find(limit=1, offset=1)] == [four.run_id]
    assert [r.id for r in history.find(text='"n": 4')] == [four.run_id]
    assert [r.id for r in history.find(text="100%_")] == []  # LIKE's wildcards are taken literally
    assert history.find(workflow="elsewhere") == []
    assert {r.id for r in history.find(states={"succeeded"})} == {two.run_id, four.run_id, three.run_id}
    assert history.find(ids=[two.run_id, "nope"])[0].id == two.run_id
    summary = history.find(ids=[four.run_id])[0]
    assert summary.counts == {"succeeded": 8, "failed": 1} and summary.tasks == 9
    assert summary.params["label"] == XSS and summary.source == str(PAGES)
    with pytest.raises(ValueError, match="cannot sort runs by 'size'"):
        history.find(sort="size")


def test_task_states_steps_and_attempts(runs):
    project, (_, four, _) = runs
    history = History(project)
    states = {s.name: s for s in history.task_states(four.run_id)}
    assert states["square[x=3]"].state == "failed" and states["square[x=3]"].attempts == 2
    assert history.step_counts(four.run_id)["square"] == {"succeeded": 3, "failed": 1}
    attempts = history.attempts(four.run_id, "square[x=3]")
    assert [a.number for a in attempts] == [1, 2]
    assert "ValueError" in attempts[-1].traceback and attempts[-1].worker
    assert history.attempts(four.run_id, since=time.time() + 60) == []  # nothing changed since
    failing = history.tasks(four.run_id, step="square", states=["failed"])
    assert [t.name for t in failing] == ["square[x=3]"]
    assert [t.name for t in history.tasks(four.run_id, step="square", limit=2, offset=1)] == [
        "square[x=1]", "square[x=2]"]


def test_a_tasks_inputs_name_the_task_that_wrote_them(runs):
    project, (_, four, _) = runs
    history = History(project)
    # The pages workflow passes plain values only: no stored file read.
    assert history.inputs(four.run_id, "total") == {}
    assert history.workflow(four.run_id).steps["total"].min_success == 2


def test_the_log_of_an_attempt_is_where_the_engine_wrote_it(runs):
    project, (_, four, _) = runs
    history = History(project)
    summary = history.summary(four.run_id)
    path = history.log_path(summary, "square[x=3]", 2, "err")
    assert path.read_text() == "three is about to fail\n"
    assert path == log_path(project.home, four.run_id, "square[x=3]", 2, "err")
    with pytest.raises(ValueError, match="stream must be 'out' or 'err'"):
        log_path(project.home, four.run_id, "total", 1, "both")


def test_a_run_whose_engine_was_killed_reads_interrupted(tmp_path):
    home = tmp_path / ".fanflow"
    engine = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "run", str(PAGES), "-p", "pause=600",
                               "--home", str(home)], cwd=FLOWS, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ})
    project = Project(home)
    try:
        history = History(project)
        deadline = time.time() + 120
        while time.time() < deadline and not any(
                t.name == "wait" and t.state == "running" for r in history.find() for t in history.tasks(r.id)):
            time.sleep(0.2)
        assert [r.state for r in history.find(states={"running"})] == ["running"]
        engine.send_signal(signal.SIGKILL)
        engine.wait(30)
        assert [r.state for r in history.find(states={"interrupted"})] == ["interrupted"]
        assert history.find(states={"running"}) == []
    finally:
        if engine.poll() is None:
            engine.kill()
        project.close()
