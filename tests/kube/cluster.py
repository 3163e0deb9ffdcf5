"""The world the miniature Argo controller's pods live in: real processes for pods, and a
stand-in for KServe and for the cluster's DNS.

A pod is a real ``fanflow exec`` process started from the container's command and
arguments; its container file system is a folder of its own (paths under ``/tmp/fanflow``
map there), and its node's artifact cache too. The "image" is this checkout's Python with
the workflow's folder as working directory.

KServe is stood in for: an InferenceService created by a resource template is checked
against KServe's own CRD schema, then its predictor's command runs as a real process on a
free local port. Pods reach ``http://NAME-predictor.NAMESPACE.svc.cluster.local`` through
a ``socket.getaddrinfo`` hook (``sitecustomize``) that maps those names to the
predictor's local port, the cluster's DNS and Services imitated in-process (so the
processes here run asyncio's event loop, not uvloop, which resolves names in libuv).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.kube.schemas import check_inference_service

CONTAINER_ROOT = "/tmp/fanflow"
SITE = """
import importlib.abc, json, os, socket, sys

_real = socket.getaddrinfo


def _lookup(host, port, *args, **kwargs):
    path = os.environ.get("FANFLOW_TEST_CLUSTER_DNS")
    if path and isinstance(host, str) and host.endswith((".svc.cluster.local", "-predictor")):
        try:
            with open(path) as f:
                names = json.load(f)
        except (OSError, ValueError):
            names = {}
        if host in names:
            return _real("127.0.0.1", names[host], *args, **kwargs)
    return _real(host, port, *args, **kwargs)


class _NoUvloop(importlib.abc.MetaPathFinder):
    # uvloop resolves names in libuv, past socket.getaddrinfo: servers here run asyncio's loop
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "uvloop":
            raise ImportError("uvloop is not in this image")
        return None


socket.getaddrinfo = _lookup
sys.meta_path.insert(0, _NoUvloop())
"""


@dataclass
class PodResult:
    exit_code: int
    outputs: dict[str, str | None]  # container path -> text (None: no such file)
    log: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path, image_dir: Path, *, nodes: int = 4):
        self.root = root
        self.image_dir = image_dir
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "site").mkdir(exist_ok=True)
        (self.root / "site" / "sitecustomize.py").write_text(SITE)
        self.dns = self.root / "dns.json"
        self.dns.write_text("{}")
        self._slots = threading.Semaphore(nodes)  # pods running at once
        self._lock = threading.Lock()
        self._pods = 0
        self.predictors: dict[str, tuple[subprocess.Popen, dict]] = {}
        self.services: dict[str, dict] = {}

    def env(self, node: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FANFLOW_")}
        path = [str(self.root / "site"), str(Path(__file__).resolve().parents[2])]
        env.update(
            PYTHONPATH=os.pathsep.join(path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
            FANFLOW_TEST_CLUSTER_DNS=str(self.dns),
            FANFLOW_CACHE=str(self.root / f"node-{node % 2}-cache"),
            PYTHONUNBUFFERED="1",
        )
        return env

    # -- pods ---------------------------------------------------------------------------
    def run_pod(
        self,
        name: str,
        command: list[str],
        args: list[str],
        files: dict[str, str],
        outputs: list[str],
        deadline: float | None,
    ) -> PodResult:
        with self._lock:
            self._pods += 1
            number = self._pods
        sandbox = Path(tempfile.mkdtemp(prefix=f"pod-{number}-", dir=self.root))
        for path, text in files.items():
            target = self._local(sandbox, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        argv = [*self._program(command), *(self._map(sandbox, a) for a in args)]
        env = {**self.env(number), "HOSTNAME": name[-60:]}
        with self._slots:
            try:
                done = subprocess.run(
                    argv, cwd=self.image_dir, env=env, capture_output=True, text=True, timeout=deadline or 600
                )
                code, log = done.returncode, done.stdout + done.stderr
            except subprocess.TimeoutExpired as exc:
                code, log = 137, f"{exc.stderr or ''}\nactive deadline exceeded"
        found = {}
        for path in outputs:
            target = self._local(sandbox, path)
            found[path] = target.read_text(encoding="utf-8") if target.is_file() else None
        return PodResult(code, found, log)

    @staticmethod
    def _program(command: list[str]) -> list[str]:
        """The image's ``fanflow exec``: this checkout's, as ``python -m fanflow.cli.kube exec``
        (the same command, without the imports of the other command groups)."""
        if command[:2] != ["fanflow", "exec"]:
            raise AssertionError(f"the image runs only `fanflow exec`, not {command}")
        return [sys.executable, "-m", "fanflow.cli.kube", "exec"]

    def _local(self, sandbox: Path, path: str) -> Path:
        if not path.startswith(CONTAINER_ROOT + "/"):
            raise AssertionError(f"a pod's file outside {CONTAINER_ROOT}: {path}")
        return sandbox / path[len(CONTAINER_ROOT) + 1 :]

    def _map(self, sandbox: Path, arg: str) -> str:
        """A container path in an argument (``/tmp/fanflow/...`` or ``NAME=/tmp/fanflow/...``)."""
        head, sep, tail = arg.partition("=")
        if sep and tail.startswith(CONTAINER_ROOT + "/"):
            return f"{head}={self._local(sandbox, tail)}"
        return str(self._local(sandbox, arg)) if arg.startswith(CONTAINER_ROOT + "/") else arg

    # -- KServe -------------------------------------------------------------------------
    def create(self, manifest_text: str, namespace: str) -> str:
        """``kubectl create``: check the InferenceService against KServe's CRD, then start
        its predictor. Returns its name."""
        manifest = yaml.safe_load(manifest_text)
        check_inference_service(manifest)
        name = manifest["metadata"]["name"]
        if name in self.services:
            raise RuntimeError(f'inferenceservices.serving.kserve.io "{name}" already exists')
        self.services[name] = manifest
        container = manifest["spec"]["predictor"]["containers"][0]
        port = free_port()
        args = list(container["args"])
        args[args.index("--host") + 1] = "127.0.0.1"
        args[args.index("--port") + 1] = str(port)
        argv = [sys.executable, *container["command"][1:], *args]
        log = self.root / f"predictor-{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(argv, cwd=self.image_dir, env=self.env(0), stdout=out, stderr=out)
        probe = container["readinessProbe"]["httpGet"]["path"]
        self.predictors[name] = (process, {"port": port, "probe": probe, "log": log})
        with self._lock:
            names = json.loads(self.dns.read_text())
            names[f"{name}-predictor.{namespace}.svc.cluster.local"] = port
            names[f"{name}-predictor"] = port
            self.dns.write_text(json.dumps(names))
        return name

    def ready(self, name: str) -> bool:
        """Whether the predictor answers its readiness probe (KServe: the model is Loaded)."""
        process, info = self.predictors[name]
        if process.poll() is not None:
            raise RuntimeError(f"predictor of {name} exited: {info['log'].read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{info['port']}{info['probe']}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, name: str, deadline: float) -> bool:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.ready(name):
                return True
            time.sleep(0.2)
        return False

    def delete(self, selector: str) -> list[str]:
        key, _, value = selector.partition("=")
        gone = [n for n, m in self.services.items() if m["metadata"].get("labels", {}).get(key) == value]
        for name in gone:
            self._stop(name)
            del self.services[name]
        return gone

    def _stop(self, name: str) -> None:
        process, _ = self.predictors.pop(name)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()

    def close(self) -> None:
        for name in list(self.predictors):
            self._stop(name)
