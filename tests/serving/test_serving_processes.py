"""Servers in their own processes, as a workflow runs them: the commands, the announcement,
SIGTERM, the service port, and a member killed under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx

from fanflow.serving import wire
from fanflow.serving.gateway import create_gateway_app
from fanflow.serving.server import bind_socket
from fanflow.stores.artifacts import ArtifactStore
from tests.serving.serving_helpers import ROOT, wait_ready
from tests.serving.serving_predictors import BrightnessTagger, clips_with

LOADER = "tests.serving.serving_predictors:load_tagger"


def free_port() -> int:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_model_server_command_announces_serves_and_stops_on_sigterm(tmp_path, server_process):
    store = ArtifactStore(tmp_path / "store")
    stored = store.put_file(BrightnessTagger().save(tmp_path / "m.json"), suffix=".json")
    ready_file = tmp_path / "ready.json"
    port = free_port()
    env = {"FANFLOW_SERVICE_READY_FILE": str(ready_file), "FANFLOW_SERVICE_PORT": str(port)}
    args = [
        "--store",
        str(store.root),
        "--artifact",
        f"{stored.digest}.json",
        "--name",
        "cnn",
        "--loader",
        LOADER,
    ]

    server = server_process("fanflow.serving.model_server", *args, env=env)
    assert server.url == f"http://127.0.0.1:{port}"  # the service port, as a restart needs
    assert json.loads(ready_file.read_text()) == {"url": server.url, "model": "cnn"}
    request = wire.infer_request(clips_with({"r0c0": 1.0}), "x1")
    response = httpx.post(server.url + "/v2/models/cnn/infer", json=request)
    assert response.json()["id"] == "x1" and response.json()["model_version"] == stored.hex[:12]
    assert server.terminate() == 0  # SIGTERM: a clean shutdown

    again = server_process("fanflow.serving.model_server", *args, env=env)
    assert again.url == server.url  # restarted on the same port: same URL
    assert httpx.get(again.url + "/v2/health/ready").status_code == 200


def test_model_server_command_fails_in_one_line(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    missing = "sha256:" + "ab" * 32 + ".json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanflow.serving.model_server",
            "--store",
            str(store.root),
            "--artifact",
            missing,
            "--port",
            "0",
            "--loader",
            LOADER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not in the store" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_while_loading_stops_without_announcing(tmp_path):
    model = tmp_path / "slow.json"
    model.write_text(json.dumps({"load_seconds": 2.0}))
    ready_file = tmp_path / "ready.json"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FANFLOW_SERVICE_READY_FILE": str(ready_file),
    }
    command = [
        sys.executable,
        "-m",
        "fanflow.serving.model_server",
        "--model",
        str(model),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        [*command, "--loader", LOADER], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", "/v2/health/live")
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 503  # still loading
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert process.stdout.read() == ""  # no URL printed
        assert not ready_file.exists()  # and nothing announced
    finally:
        process.kill()
        process.stdout.close()


def test_gateway_command(tmp_path, server_process):
    model = str(BrightnessTagger().save(tmp_path / "m.json"))
    a = server_process(
        "fanflow.serving.model_server", "--model", model, "--name", "a", "--port", "0", "--loader", LOADER
    )
    b = server_process(
        "fanflow.serving.model_server", "--model", model, "--name", "b", "--port", "0", "--loader", LOADER
    )
    gateway = server_process(
        "fanflow.serving.gateway",
        "--member",
        f"a={a.url}",
        "--member",
        f"b={b.url}",
        "--strategy",
        "weighted",
        "--weight",
        "a=2",
        "--quorum",
        "2",
        "--port",
        "0",
    )
    request = wire.infer_request(clips_with({"r1c1": 1.0}))
    response = httpx.post(gateway.url + "/v2/models/ensemble/infer", json=request)
    assert response.status_code == 200
    assert response.json()["parameters"]["strategy"] == "weighted"
    assert response.json()["outputs"][0]["data"] == ['["r1c1"]']
    assert gateway.terminate() == 0


def test_killing_a_member_under_load_never_fails_a_request(serve, tmp_path, server_process):
    model = str(BrightnessTagger().save(tmp_path / "m.json"))
    a = server_process(
        "fanflow.serving.model_server", "--model", model, "--name", "a", "--port", "0", "--loader", LOADER
    )
    b = server_process(
        "fanflow.serving.model_server", "--model", model, "--name", "b", "--port", "0", "--loader", LOADER
    )
    wait_ready(a.url)
    wait_ready(b.url)
    gateway = serve(
        create_gateway_app([{"url": a.url, "model": "a"}, {"url": b.url, "model": "b"}], member_timeout=2.0)
    )
    body = json.dumps(wire.infer_request(clips_with({"r0c0": 1.0}, n=2)))
    results: list[tuple[float, int, dict | str]] = []

    async def client(http: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                response = await http.post("/v2/models/ensemble/infer", content=body)
                results.append((time.monotonic(), response.status_code, response.json()))
            except httpx.HTTPError as e:
                results.append((time.monotonic(), 0, repr(e)))

    async def load() -> float:
        deadline = time.monotonic() + 3.0
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            clients = [asyncio.create_task(client(http, deadline)) for _ in range(8)]
            await asyncio.sleep(1.0)
            killed_at = time.monotonic()
            b.kill()
            await asyncio.gather(*clients)
        return killed_at

    killed_at = asyncio.run(load())
    statuses = [status for _, status, _ in results]
    assert statuses and set(statuses) == {200}, [r for r in results if r[1] != 200][:3]
    before = [body for t, _, body in results if t < killed_at]
    after = [body for t, _, body in results if t > killed_at + 0.2]
    assert before and not any(r["parameters"]["degraded"] for r in before)
    assert after and all(r["parameters"]["degraded"] for r in after)
    assert all(list(json.loads(r["parameters"]["failed_members"])) == ["b"] for r in after)
    assert all(r["outputs"][0]["data"] == ['["r0c0"]', '["r0c0"]'] for r in after)  # a still answers
