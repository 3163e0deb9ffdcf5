"""Pieces of the serving benchmark: a torch CNN predictor of the reference models' cost,
servers in their own processes, and a light HTTP/1.1 load generator on loopback.

The load generator speaks HTTP/1.1 over keep-alive connections by hand (a pre-encoded
request, a response read by its Content-Length) so that it costs the machine far less than
the servers it measures.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

TAGS = [str(d) for d in range(10)]
SHAPE = (8, 32, 32)


class ClipCNN:
    """A frame-wise CNN like the reference models (conv 16-32-64 with pooling, max over space
    and time, a sigmoid head; about 24k parameters), with seeded random weights. It keeps the
    fitted-predictor contract."""

    def __init__(self, seed: int = 0, threshold: float = 0.5):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.tags_ = list(TAGS)
        self.input_shape_ = SHAPE
        self.threshold_ = threshold
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        ).eval()  # fmt: skip
        self.head = nn.Linear(64, len(TAGS)).eval()

    def predict_proba(self, X: np.ndarray, batch_size: int = 128) -> np.ndarray:
        import torch

        # In batches of 128 clips, as the reference models predict: a whole 1,000-clip
        # request at once would take gigabytes of activations.
        out = []
        with torch.inference_mode():
            for start in range(0, len(X), batch_size):
                x = torch.tensor(np.asarray(X[start : start + batch_size], dtype=np.float32))
                b, t = x.shape[:2]
                f = self.features((x.flatten(0, 1).unsqueeze(1) - 0.1) / 0.2).amax(dim=(2, 3))
                out.append(torch.sigmoid(self.head(f.view(b, t, -1).amax(dim=1))).numpy())
        return np.concatenate(out)


# -- servers in their own processes ----------------------------------------------------------


def _announce_to_a_file() -> None:
    # The servers announce themselves to a file, as under the workflow engine (the
    # benchmark takes the URL from its queue), rather than printing.
    os.environ["FANFLOW_SERVICE_READY_FILE"] = os.path.join(tempfile.mkdtemp(), "ready.json")


def _member_main(name: str, seed: int, urls) -> None:
    from fanflow.serving.model_server import serve_model

    _announce_to_a_file()
    serve_model(ClipCNN(seed), name, port=0, on_ready=urls.put)


def _gateway_main(members: list[dict], options: dict, urls) -> None:
    from fanflow.serving.gateway import serve_gateway

    _announce_to_a_file()
    serve_gateway(members, port=0, on_ready=urls.put, **options)


def _stand_in_main(answer: bytes, delay: float, urls) -> None:
    """A member that answers every request with ``answer`` (a whole HTTP response), at once or
    ``delay`` seconds after it arrived (a timer: the stand-in takes no CPU meanwhile)."""
    import httptools
    import uvloop

    class Answering(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            if delay:
                asyncio.get_running_loop().call_later(delay, self.transport.write, answer)
            else:
                self.transport.write(answer)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Answering, "127.0.0.1", 0)
        urls.put(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        await server.serve_forever()

    uvloop.run(serve())


class ServerProcess:
    def __init__(self, target, *args):
        ctx = mp.get_context("spawn")
        urls = ctx.Queue()
        # Not daemonic: a server starts its own decoding worker processes.
        self.process = ctx.Process(target=target, args=(*args, urls))
        self.process.start()
        self.urls = urls

    def wait_url(self, timeout: float = 120.0) -> str:
        self.url = self.urls.get(timeout=timeout)
        return self.url

    def kill(self) -> None:
        self.process.kill()
        self.process.join(10)

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        if self.process.is_alive():
            self.kill()


def start_member(name: str, seed: int) -> ServerProcess:
    return ServerProcess(_member_main, name, seed)


def start_gateway(members: list[dict], **options) -> ServerProcess:
    return ServerProcess(_gateway_main, members, options)


def start_stand_in(answer: bytes, delay: float = 0.0) -> ServerProcess:
    """A stand-in for a member that answers at once (or after ``delay`` seconds, using no CPU),
    always with ``answer``: a gateway in front of stand-ins shows its own cost, without the
    members' work."""
    return ServerProcess(_stand_in_main, answer, delay)


def recorded_answer(url: str, path: str, body: Body) -> bytes:
    """The whole HTTP response (head and body) of one request, as the server sent it."""

    async def ask() -> bytes:
        host, port, payload = request_bytes(url, path, body)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        _, length = _status_and_length(head)
        answer = head + await reader.readexactly(length)
        writer.close()
        return answer

    return asyncio.run(ask())


# -- load -----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, of the 200 answers
    errors: int = 0  # any answer but 200, and broken connections
    degraded: int = 0  # 200 answers marked degraded
    failed_members: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warmup_requests: int = 0  # answered in the unmeasured warm-up before

    def add(self, other: LoadResult) -> LoadResult:
        self.latencies += other.latencies
        self.warmup_requests += other.warmup_requests
        self.errors += other.errors
        self.degraded += other.degraded
        for member, count in other.failed_members.items():
            self.failed_members[member] = self.failed_members.get(member, 0) + count
        self.error_samples += other.error_samples[: 5 - len(self.error_samples)]
        self.seconds += other.seconds
        return self

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Body:
    """A request body as sent: JSON, or binary tensor data after a JSON header."""

    content: bytes
    json_length: int | None = None

    def head_lines(self) -> str:
        if self.json_length is None:
            return "Content-Type: application/json\r\n"
        return f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {self.json_length}\r\n"


def request_bytes(url: str, path: str, body: Body) -> tuple[str, int, bytes]:
    hostport = url.removeprefix("http://")
    host, port = hostport.rsplit(":", 1)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\n{body.head_lines()}"
        f"Content-Length: {len(body.content)}\r\n\r\n"
    ).encode()
    return host, int(port), head + body.content


def _status_and_length(head: bytes) -> tuple[int, int]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, length


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, length = _status_and_length(head)
    return status, await reader.readexactly(length)


async def _exchange(connection, payload: bytes) -> tuple[int, bytes]:
    reader, writer = connection
    writer.write(payload)
    return await _read_response(reader)


async def _client(targets, deadline, result: LoadResult, record: bool, inspect: bool) -> None:
    """One closed-loop client: each request goes to every target at once (one target for a
    plain run) and is done when all have answered."""
    connections = None
    while time.perf_counter() < deadline:
        try:
            if connections is None:
                connections = [await asyncio.open_connection(host, port) for host, port, _ in targets]
            start = time.perf_counter()
            answers = await asyncio.gather(
                *(_exchange(c, t[2]) for c, t in zip(connections, targets, strict=True))
            )
            elapsed = time.perf_counter() - start
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            if record:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{type(e).__name__}: {e}")
            for _, writer in connections or []:
                writer.close()
            connections = None
            await asyncio.sleep(0.01)
            continue
        if not record:
            result.warmup_requests += 1
            continue
        bad = [(status, body) for status, body in answers if status != 200]
        if bad:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(f"{bad[0][0]}: {bad[0][1][:200]!r}")
            continue
        result.latencies.append(elapsed)
        if inspect:
            parameters = json.loads(answers[0][1]).get("parameters", {})
            if parameters.get("degraded"):
                result.degraded += 1
                for member in json.loads(parameters["failed_members"]):
                    result.failed_members[member] = result.failed_members.get(member, 0) + 1
    for _, writer in connections or []:
        writer.close()


async def _load(targets, clients, seconds, warmup, inspect, during=None) -> LoadResult:
    warm = LoadResult()
    if warmup:
        end = time.perf_counter() + warmup
        await asyncio.gather(*(_client(targets, end, warm, False, False) for _ in range(clients)))
    result = LoadResult(warmup_requests=warm.warmup_requests)
    start = time.perf_counter()
    tasks = [_client(targets, start + seconds, result, True, inspect) for _ in range(clients)]
    if during is not None:
        tasks.append(during())
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    return result


def run_load(targets, body: Body, clients, seconds, warmup=0.5, inspect=False, during=None) -> LoadResult:
    """``clients`` closed-loop clients POST ``body`` to each ``(url, path)`` of ``targets``
    at once for ``seconds`` (after ``warmup`` unmeasured seconds); ``during`` is a coroutine
    function run alongside."""
    requests = [request_bytes(url, path, body) for url, path in targets]
    return asyncio.run(_load(requests, clients, seconds, warmup, inspect, during))
