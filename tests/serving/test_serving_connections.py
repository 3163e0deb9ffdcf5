"""Slow and hostile clients against a real server on a real socket: deadlines for a request's
head, its body and idle connections, and the caps on connections, target and headers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import httpx
import pytest

from fanflow.serving import wire
from fanflow.serving.connections import Limits
from fanflow.serving.model_server import create_model_app
from fanflow.serving.server import ServerThread
from tests.serving.serving_predictors import BrightnessTagger, clips_with

TIMEOUT = 1.0  # every deadline of the servers below
SLACK = 0.75  # scheduling on a busy 2-core machine


@pytest.fixture
def server():
    limits = Limits(header_timeout=TIMEOUT, body_timeout=TIMEOUT, idle_timeout=TIMEOUT, max_connections=80)
    with ServerThread(create_model_app(BrightnessTagger(), "bright"), limits=limits) as running:
        yield running


def address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


async def slowloris(server, head: bytes, every: float = 0.2) -> tuple[float, bytes]:
    """Send ``head`` a byte at a time; the seconds until the server closes, and its answer."""
    reader, writer = await asyncio.open_connection(*address(server))
    start = time.perf_counter()
    answer = b""

    async def trickle():
        for i in range(len(head)):
            writer.write(head[i : i + 1])
            await asyncio.sleep(every)

    sending = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), TIMEOUT + 10)
    finally:
        sending.cancel()
        writer.close()
    return time.perf_counter() - start, answer


def status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def test_fifty_slowloris_connections_are_closed_in_time_while_normal_clients_are_served(server):
    head = b"POST /v2/models/bright/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" * 3
    request = wire.infer_request(clips_with({"r0c0": 1.0}))

    async def normal_clients(stop: asyncio.Event) -> tuple[int, list]:
        answered, failures = 0, []
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                for response in await asyncio.gather(
                    client.get("/v2/health/live"), client.post("/v2/models/bright/infer", json=request)
                ):
                    answered += 1
                    if response.status_code != 200:
                        failures.append(response.status_code)
        return answered, failures

    async def main():
        stop = asyncio.Event()
        normal = asyncio.create_task(normal_clients(stop))
        results = await asyncio.gather(*(slowloris(server, head) for _ in range(50)))
        stop.set()
        return results, await normal

    results, (answered, failures) = asyncio.run(main())
    assert failures == [] and answered > 10
    for seconds, answer in results:
        assert TIMEOUT - 0.1 <= seconds < TIMEOUT + SLACK
        status, error = status_and_error(answer)
        assert status == 408 and "head" in error
    text = httpx.get(server.url + "/metrics").text
    assert 'fanflow_http_refused_total{status="408"} 50.0' in text


def test_a_trickled_body_is_cut_off_at_the_body_deadline(server):
    head = b"POST /v2/models/bright/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"

    async def main():
        reader, writer = await asyncio.open_connection(*address(server))
        writer.write(head)
        start = time.perf_counter()
        answer = asyncio.create_task(reader.read())
        for _ in range(100):  # 100 bytes a second, until the server has answered
            if answer.done():
                break
            writer.write(b" " * 10)
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - start
        writer.close()
        return seconds, await asyncio.wait_for(answer, 5)

    seconds, answer = asyncio.run(main())
    assert seconds < TIMEOUT + SLACK
    assert status_and_error(answer) == (408, f"the request's body did not arrive within {TIMEOUT:g} s")
    text = httpx.get(server.url + "/metrics").text
    assert 'status="500"' not in text


def test_an_idle_connection_is_closed(server):
    with socket.create_connection(address(server)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(TIMEOUT + 5)
        start = time.perf_counter()
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert sock.recv(65536) == b""  # closed by the server
        assert time.perf_counter() - start < TIMEOUT + SLACK


def test_a_connection_that_says_nothing_is_closed(server):
    with socket.create_connection(address(server)) as sock:
        sock.settimeout(TIMEOUT + 5)
        start = time.perf_counter()
        status, _ = status_and_error(sock.recv(65536))
        assert status == 408 and time.perf_counter() - start < TIMEOUT + SLACK


@pytest.mark.parametrize(
    "head, status, words",
    [
        (b"GET /v2/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "target"),
        (b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", 431, "head"),
        (
            b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5000)) + b"\r\n",
            431,
            "headers",
        ),
        (b"GET /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400, "malformed"),
        (b"BREW /v2 HTCPCP/1.0\r\n\r\n", 400, "malformed"),
    ],
    ids=["100 KB target", "1 MB header", "5000 headers", "bad content-length", "not http"],
)
def test_oversized_or_malformed_heads_are_refused_in_json(server, head, status, words):
    with socket.create_connection(address(server)) as sock:
        sock.settimeout(5)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)  # the server may answer and stop reading before the head's end
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    got, error = status_and_error(answer)
    assert got == status and words in error
    assert httpx.get(server.url + "/v2/health/live").status_code == 200


def test_connections_past_the_cap_are_refused(server):
    sockets = [socket.create_connection(address(server)) for _ in range(80)]
    try:
        time.sleep(0.2)
        with socket.create_connection(address(server)) as extra:
            extra.settimeout(5)
            status, error = status_and_error(extra.recv(65536))
        assert status == 503 and "80 connections" in error
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(server.url + "/v2/health/live").status_code == 200


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="header_timeout"):
        Limits(header_timeout=0)
