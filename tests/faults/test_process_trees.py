"""A task's whole process tree dies with it: on a timeout, on a cancel, and when the engine
itself is killed with SIGKILL, including a child that started a session of its own and a
daemon whose parent exited. Checked with psutil, on real processes."""

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fanflow.spec.loader import load_workflow
from tests.conftest import ROOT
from tests.engine.drive import run_workflow as run

KINDS = ("worker", "plain", "session", "daemon")


def _tree_flow(flows, pids: Path, timeout: str = ""):
    return flows(f"""
        name: tree
        steps:
          spawn:
            uses: fault_steps:spawn_tree
            with: {{pid_file: "{pids}"}}
            {timeout}
    """)


def _wait_for_pids(pids: Path, deadline: float = 60) -> dict[str, int]:
    stop = time.time() + deadline
    while time.time() < stop:
        files = {kind: Path(f"{pids}.{kind}") for kind in KINDS}
        if all(f.exists() and f.read_text() for f in files.values()):
            return {kind: int(f.read_text()) for kind, f in files.items()}
        time.sleep(0.1)
    raise AssertionError("the task never started its processes")


def _survivors(found: dict[str, int], within: float = 10.0) -> dict[str, int]:
    stop = time.time() + within
    while True:
        alive = {}
        for kind, pid in found.items():
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive[kind] = pid
            except psutil.NoSuchProcess:
                pass
        if not alive or time.time() > stop:
            return alive
        time.sleep(0.1)


@pytest.fixture
def reap():
    """Whatever a failing test leaves behind is killed, not left to run."""
    found: dict[str, int] = {}
    yield found
    for pid in found.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def test_a_timed_out_task_takes_its_whole_tree_with_it(flows, home, tmp_path, reap):
    pids = tmp_path / "pids"
    spec = load_workflow(_tree_flow(flows, pids, timeout="timeout: 5"))
    result = run(home, spec)
    reap.update(_wait_for_pids(pids, deadline=1))
    assert result.state == "failed" and "timed out after 5s" in result.error
    assert _survivors(reap) == {}


@pytest.mark.parametrize("how", ["cancelled with Ctrl-C", "engine killed with SIGKILL"])
def test_a_stopped_engine_leaves_no_process_of_its_tasks(how, flows, home, tmp_path, reap):
    pids = tmp_path / "pids"
    flow = _tree_flow(flows, pids)
    engine = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "run", str(flow), "--home", str(home)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reap.update(_wait_for_pids(pids))
    descendants = {p.pid for p in psutil.Process(engine.pid).children(recursive=True)}
    assert {reap["worker"], reap["plain"], reap["session"]} <= descendants
    engine.send_signal(signal.SIGINT if how.startswith("cancelled") else signal.SIGKILL)
    engine.wait(timeout=60)
    assert _survivors(reap) == {}, f"still running after the engine was {how}"


def test_a_crashed_task_names_the_signal(flows, home):
    spec = load_workflow(flows("name: crash\nsteps:\n  boom: {uses: fault_steps:segfault}\n"))
    result = run(home, spec)
    error = result.tasks["boom"].error
    assert "the worker process died (killed by SIGSEGV (signal 11))" in error, error
    assert json.dumps(error)  # and it is recorded as plain text
