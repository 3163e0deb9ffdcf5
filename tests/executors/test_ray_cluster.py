"""Ray across nodes: a two-node Ray cluster on this machine (a head and a second ``ray start``,
each with one CPU and a resource of its own). The engine's Ray tests and the reference
workflow give the same results on it as locally; a task bigger than every node is refused at
once, naming the task and the largest node, even though the cluster as a whole is big enough.

Every port is a free one, so other Ray instances on the machine are left alone; the cluster
is stopped by killing the process groups of its two ``ray start --block`` commands."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, write

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
PORT_OPTIONS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TwoNodes:
    def __init__(self):
        # A short folder: Ray's Unix sockets live under it, and their paths have a length limit.
        self.folder = Path(tempfile.mkdtemp(prefix="ffray", dir="/tmp"))
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.processes: list[subprocess.Popen] = []
        self.address = ""

    def start(self) -> None:
        head = self._node("head", ["--head", f"--port={_free_port()}", "--include-dashboard=false",
                                   f"--temp-dir={self.folder}"])
        self.address = re.search(r"ray start --address='([^']+)'", head).group(1)
        self._node("second", [f"--address={self.address}"])

    def _node(self, name: str, options: list[str]) -> str:
        command = [RAY, "start", "--block", "--disable-usage-stats", "--num-cpus=1",
                   f"--resources={json.dumps({name: 1})}", *options]
        command += [f"{option}={_free_port()}" for option in PORT_OPTIONS]
        log = self.folder / f"{name}.log"
        with open(log, "w") as out:
            self.processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                   start_new_session=True, env=self.env))
        deadline = time.time() + 180
        while time.time() < deadline:
            text = log.read_text()
            if "Ray runtime started" in text:
                return text
            if self.processes[-1].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the {name} Ray node did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            with _gone_quietly():
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                with _gone_quietly():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class _gone_quietly:
    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is ProcessLookupError


@pytest.fixture(scope="module")
def cluster():
    nodes = TwoNodes()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def _pytest(cluster, *args) -> subprocess.CompletedProcess:
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "ray", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


STEPS = """
import time

import ray


def node(x: int) -> dict:
    time.sleep(1.0)
    return {"x": x, "node": ray.get_runtime_context().get_node_id()}
"""


def test_tasks_spread_over_both_nodes_and_one_bigger_than_every_node_is_refused_at_once(cluster, tmp_path):
    write(tmp_path, "clusteredsteps.py", STEPS)
    write(tmp_path, "spread.yaml", """
        name: spread
        steps:
          where: {uses: clusteredsteps:node, fan_out: {x: [1, 2]}, with: {x: "${item.x}"}, resources: {cpus: 1}}
        """)
    home = tmp_path / "home"
    env = {"RAY_ADDRESS": cluster.address, "RAY_AUTH_MODE": "disabled"}
    spread = cli("run", "spread.yaml", "--executor", "ray", "--home", home, "--json", cwd=tmp_path, env=env,
                 timeout=300, check=True)
    outputs = json.loads(spread.stdout)["results"]["where"]
    assert [o["x"] for o in outputs] == [1, 2] and len({o["node"] for o in outputs}) == 2

    write(tmp_path, "big.yaml", """
        name: big
        steps:
          big: {uses: clusteredsteps:node, with: {x: 99}, resources: {cpus: 2}}
        """)
    started = time.time()
    refused = cli("run", "big.yaml", "--executor", "ray", "--home", home, cwd=tmp_path, env=env, timeout=300)
    assert refused.returncode == 1
    assert re.search(r"big asks for 2 cpus, more than any node of the Ray cluster has: the largest, "
                     r"node \w+ at [\d.]+, has 1 cpus", refused.stderr), refused.stderr
    assert time.time() - started < 60  # refused, not left waiting for a node that never comes
    assert "Traceback" not in refused.stderr


def test_the_engines_ray_tests_pass_on_two_nodes(cluster):
    done = _pytest(cluster, "tests/engine")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert re.search(r"\d+ passed", done.stdout) and " failed" not in done.stdout


def test_the_reference_workflow_gives_the_same_results_on_two_nodes_as_locally(cluster):
    done = _pytest(cluster, "tests/reference/test_reference_workflow.py", "-k", "on_ray")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout
