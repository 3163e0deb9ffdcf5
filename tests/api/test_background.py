"""Runs started in the background (``fanflow.background``): checked before anything
starts, recorded before ``start`` returns, cancelled as Ctrl-C would, and resumed."""

from __future__ import annotations

import time

import pytest

from fanflow import background
from fanflow.history import History
from fanflow.project import Project
from fanflow.spec.errors import SpecError
from tests.ui.conftest import PAGES


def _wait_for(history: History, run_id: str, states: set[str], timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = history.summary(run_id).state
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} is still {history.summary(run_id).state}")


def test_parameters_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(SpecError, match=r"params\.n: expected a value of type int, got 'many'"):
        background.start(PAGES, params={"n": "many"}, home=tmp_path / ".fanflow")
    with pytest.raises(SpecError, match="unknown parameter 'm'"):
        background.start(PAGES, params={"m": "1"}, home=tmp_path / ".fanflow")
    with pytest.raises(ValueError, match="exactly one of"):
        background.start(PAGES, resume="x", home=tmp_path / ".fanflow")


def test_a_background_run_is_recorded_at_once_then_cancelled_then_resumed(tmp_path):
    home = tmp_path / ".fanflow"
    gate = tmp_path / "gate"
    launched = background.start(PAGES, params={"n": "3", "pause": "600", "gate": str(gate)}, home=home)
    project = Project(home)
    try:
        history = History(project)
        assert history.summary(launched.run_id).state == "running"  # recorded before start returned
        deadline = time.time() + 120
        while history.task(launched.run_id, "wait") is None or history.task(launched.run_id, "wait").state != "running":
            assert time.time() < deadline
            time.sleep(0.2)
        background.cancel(launched.run_id, home=home)
        assert launched.wait(60) != 0
        assert history.summary(launched.run_id).state == "cancelled"
        with pytest.raises(SpecError, match="is not running"):
            background.cancel(launched.run_id, home=home)
        gate.write_text("open")
        resumed = background.start(resume=launched.run_id, home=home)
        assert _wait_for(history, resumed.run_id, {"succeeded", "failed"}) == "succeeded"
        summary = history.summary(resumed.run_id)
        assert summary.resumed_from == launched.run_id
        assert history.task(resumed.run_id, "numbers").cached
        assert "run " + resumed.run_id + " succeeded" in resumed.log.read_text()
    finally:
        project.close()
