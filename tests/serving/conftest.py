"""Fixtures for the serving tests: real servers on loopback ports, real HTTP."""

from __future__ import annotations

import pytest

from fanflow.serving.server import ServerThread
from tests.serving.serving_helpers import ServerProcess


@pytest.fixture
def serve():
    """serve(app, port=0) -> a started ServerThread on a loopback port (a free one by
    default), stopped after the test."""
    started: list[ServerThread] = []

    def start(app, port: int = 0) -> ServerThread:
        server = ServerThread(app, port=port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.request_stop()
    for server in started:
        server.stop()


@pytest.fixture
def server_process():
    """server_process(module, *args, env=None) -> a running ServerProcess, killed after the test."""
    started: list[ServerProcess] = []

    def start(module: str, *args: str, env: dict | None = None) -> ServerProcess:
        process = ServerProcess(module, *args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
