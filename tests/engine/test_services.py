"""Service steps: long-running processes that stay up while the run needs them."""

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.vocab.states import State
from tests.conftest import write

STEPS = Path(__file__).with_name("flowsteps.py")

SERVICES = """
name: services
steps:
  serve:
    uses: flowsteps:http_service
    kind: service
    fan_out: {name: [alpha, beta]}
    with: {name: "${item.name}"}
  call:
    uses: flowsteps:ask
    with: {endpoints: "${serve[*]}"}
"""


@pytest.fixture
def flows(workdir):
    shutil.copy(STEPS, workdir / "flowsteps.py")
    return workdir


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_services_start_hand_their_endpoint_downstream_and_stop_at_the_end(flows, home, executor):
    result = Project(home).run(load_workflow(write(flows, "s.yaml", SERVICES)), executor=executor)
    assert result.state == "succeeded", result.error
    answers = result.outputs("call")[0]
    assert [a["name"] for a in answers] == ["alpha", "beta"]
    assert all(result.tasks[f"serve[name={n}]"].state is State.SUCCEEDED for n in ("alpha", "beta"))
    time.sleep(0.5)
    assert all(_gone(a["pid"]) for a in answers)
    urls = [e["url"] for e in result.outputs("serve")]
    assert all(u.startswith("http://127.0.0.1:") for u in urls)


def test_a_service_that_dies_is_restarted_on_the_same_address(flows, home, executor):
    text = SERVICES.replace("uses: flowsteps:ask", "uses: flowsteps:kill_and_ask_again")
    result = Project(home).run(load_workflow(write(flows, "s.yaml", text)), executor=executor)
    assert result.state == "succeeded", result.error
    outcome = result.outputs("call")[0]
    assert outcome["new"] != outcome["old"] and outcome["back_after_s"] < 5
    attempts = Project(home).store.attempts(result.run_id, "serve[name=alpha]")
    assert [a["state"] for a in attempts][:1] == ["exited"] and len(attempts) == 2


def test_a_service_that_never_becomes_ready_fails_with_its_error(flows, home, executor):
    result = Project(home).run(load_workflow(write(flows, "s.yaml", """
        name: broken-service
        steps:
          serve: {uses: flowsteps:crash_on_start, kind: service}
          after: {uses: flowsteps:ask, with: {endpoints: ["${serve}"]}}
        """)), executor=executor)
    assert result.state == "failed"
    assert "the service exited with code 1" in result.tasks["serve"].error
    assert "cannot bind" in result.tasks["serve"].error


def test_run_with_serve_keeps_services_up_until_ctrl_c(flows, home):
    write(flows, "s.yaml", SERVICES)
    process = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "run", "s.yaml", "--serve", "--home",
                                str(home)], cwd=flows, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    urls = []
    deadline = time.time() + 60
    while len(urls) < 2 and time.time() < deadline:
        line = process.stdout.readline()
        if line.startswith("serving "):
            urls.append(line.rsplit(" ", 1)[1].strip())
    assert len(urls) == 2, process.stderr.read() if process.poll() is not None else "no URLs printed"
    answers = [json.loads(urllib.request.urlopen(u, timeout=5).read()) for u in urls]
    assert sorted(a["name"] for a in answers) == ["alpha", "beta"]
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 0
    time.sleep(0.5)
    assert all(_gone(a["pid"]) for a in answers)
