"""Helpers of the serving tests: waiting for a server, and servers in their own processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def wait_ready(url: str, path: str = "/v2/health/ready", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not become ready in {timeout} s")


class ServerProcess:
    """A server started with ``python -m MODULE ARGS``, which prints its URL once ready."""

    def __init__(self, module: str, *args: str, env: dict | None = None):
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=ROOT,
        )
        # Outside a workflow, fanflow.runtime.announce prints its own line before the URL.
        lines = []
        while line := self.proc.stdout.readline():
            lines.append(line)
            if line.startswith("http://"):
                self.url = line.strip()
                break
        else:
            self.proc.kill()
            raise RuntimeError(f"{module} did not start: {lines!r} {self.proc.stderr.read()}")

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.proc.stdout.close()
        self.proc.stderr.close()
