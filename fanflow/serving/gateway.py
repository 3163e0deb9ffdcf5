"""The ensemble gateway: one V2 model, ``ensemble``, in front of several model servers.

Each inference request goes to every member at once (one shared, pooled HTTP client), each
call under its own deadline; the answers are combined by a strategy (``strategies``) and
every tag carries its provenance. A member that fails or times out does not fail the
request: the answer is marked degraded and names the member and why. Fewer answers than the
quorum (or none) is a 503 that lists every member's error. A request the members all refuse
(400 or 413) gets their answer.

The gateway reads each request (checking it as the protocol says; the members check what
their model needs) and sends the members its tensors as binary tensor data: the bytes of a
request that came binary are relayed as they came, only the small JSON header is written
anew (without the ``outputs`` it names, which are the gateway's own). A JSON request is
decoded once, here, instead of once per member. Each member call's deadline grows with the
bytes it carries (``member_timeout`` + ``member_seconds_per_mib`` per MiB); a request whose
tensors would exceed the members' body limit is refused up front with 413. A client that
hangs up, or a member past its deadline, closes the member's connection: the member then
drops the work it had not started.

    python -m fanflow.serving.gateway --member cnn=http://127.0.0.1:8001 \\
        --member cnn_dropout=http://127.0.0.1:8002 --strategy union --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fanflow.serving import binary, wire
from fanflow.serving.client import Member, MemberAnswer, infer_members, member_request, members_from
from fanflow.serving.connections import Limits
from fanflow.serving.decoding import Decoder
from fanflow.serving.endpoints import REQUEST_ID, build_app, current_request_id
from fanflow.serving.http_pool import HTTPPool
from fanflow.serving.metrics import LabelCache, ServerMetrics
from fanflow.serving.protocol import (
    DEFAULT_MAX_BODY_BYTES,
    InferRequest,
    ProtocolError,
    infer_response,
    metadata_tensor,
    select_outputs,
)
from fanflow.serving.server import DEFAULT_HOST, add_limit_options, limits_from, serve_blocking
from fanflow.serving.strategies import STRATEGIES, Strategy

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
PLATFORM = "fanflow_ensemble"
DEFAULT_MEMBER_TIMEOUT = 5.0
# A member call's deadline grows by this per MiB it carries: about five times what a
# reference-sized CNN needs on one thread (32 KiB per clip, 1.4 ms per clip: 45 ms per MiB).
DEFAULT_MEMBER_SECONDS_PER_MIB = 0.25
# Members close connections idle for 15 s (connections.Limits.idle_timeout); the gateway lets
# go of its idle ones first, so that it never sends on a connection the member is closing.
MEMBER_KEEPALIVE_SECONDS = 10.0
# Connections the gateway keeps open to each member; more requests than this wait in the
# gateway (a model server runs one inference at a time, so more would only queue there).
DEFAULT_MEMBER_CONNECTIONS = 8
OUTPUTS = (wire.TAGS, wire.SCORES, wire.PROVENANCE)
FAILURE_LOG_SECONDS = 10.0  # a failing member is logged at most this often


class Gateway:
    """The served side of the gateway (see ``endpoints.Served``)."""

    name = ENSEMBLE
    version = None

    def __init__(
        self,
        members: Sequence[Member],
        strategy: Strategy,
        member_timeout: float = DEFAULT_MEMBER_TIMEOUT,
        quorum: int = 1,
        metrics: ServerMetrics | None = None,
        member_connections: int = DEFAULT_MEMBER_CONNECTIONS,
        member_seconds_per_mib: float = DEFAULT_MEMBER_SECONDS_PER_MIB,
        member_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ):
        self.members = list(members)
        self.strategy = strategy
        unknown = sorted(set(strategy.weights) - {m.name for m in self.members})
        if unknown:
            raise ValueError(f"weights given for members that are not in the ensemble: {unknown}")
        if not 1 <= quorum <= len(self.members):
            raise ValueError(f"quorum must be between 1 and the {len(self.members)} members, got {quorum}")
        if not member_timeout > 0:
            raise ValueError(f"member_timeout must be positive, got {member_timeout}")
        if member_connections < 1:
            raise ValueError(f"member_connections must be at least 1, got {member_connections}")
        if not member_seconds_per_mib >= 0:
            raise ValueError(f"member_seconds_per_mib must be at least 0, got {member_seconds_per_mib}")
        self.quorum = quorum
        self.member_timeout = member_timeout
        self.member_seconds_per_mib = member_seconds_per_mib
        self.member_max_body_bytes = member_max_body_bytes
        self._bytes_at_members = 0  # of the requests the members are working on or queueing
        self.member_connections = member_connections
        self.clients: dict[str, HTTPPool] = {}
        self._failing: dict[str, _Failing] = {}  # members whose last call failed
        self._metadata: dict | None = None
        self.metrics = metrics or ServerMetrics()
        self._member_calls = LabelCache(
            self.metrics.counter(
                "fanflow_member_requests", "Inference calls to members, by member and outcome", ("member", "outcome")
            )
        )
        self._member_latency = LabelCache(
            self.metrics.histogram(
                "fanflow_member_request_duration_seconds", "Latency of inference calls to members", ("member",)
            )
        )
        self._answers = LabelCache(
            self.metrics.counter("fanflow_ensemble_answers", "Ensemble inference answers, by result", ("result",))
        )

    async def start(self) -> None:
        # One pool of connections per member: a member that hangs holds its own connections only.
        self.clients = {
            m.name: HTTPPool(m.url, self.member_connections, MEMBER_KEEPALIVE_SECONDS) for m in self.members
        }

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.close()

    def _log_outcomes(self, answers: list[MemberAnswer]) -> None:
        """Log members' failures in full, but not once per request: a member that is down
        is logged when it starts failing, then at most every ``FAILURE_LOG_SECONDS`` with the
        count since, and once when it answers again."""
        now = time.monotonic()
        for a in answers:
            name = a.member.name
            failing = self._failing.get(name)
            if a.outcome in ("ok", "rejected"):
                if failing is not None:
                    del self._failing[name]
                    log.warning("member %s answers again, after %d failed call(s)", name, failing.total)
                continue
            why = f"{a.error}" + (f" ({a.log_detail})" if a.log_detail else "")
            if failing is None:
                self._failing[name] = _Failing(now)
                log.warning("member %s at %s: %s", name, a.member.url, why)
            else:
                failing.total += 1
                failing.unlogged += 1
                if now - failing.logged_at >= FAILURE_LOG_SECONDS:
                    log.warning(
                        "member %s at %s is still failing: %d more failed call(s); the latest: %s",
                        name, a.member.url, failing.unlogged, why,
                    )  # fmt: skip
                    failing.logged_at, failing.unlogged = now, 0

    def _count_calls(self, answers: list[MemberAnswer]) -> None:
        for a in answers:
            self._member_calls(a.member.name, a.outcome).inc()
            self._member_latency(a.member.name).observe(a.seconds)

    async def _ask_all(self, method: str, path: str, timeout: float) -> list[MemberAnswer]:
        answers = await asyncio.gather(
            *(member_request(self.clients[m.name], m, method, path, timeout) for m in self.members)
        )
        self._log_outcomes(answers)
        return answers

    # -- protocol -----------------------------------------------------------------------
    async def readiness(self) -> str | None:
        answers = await self._ask_all("GET", "/ready", min(self.member_timeout, 2.0))
        ready = sum(a.status == 200 for a in answers)
        if ready >= self.quorum:
            return None
        errors = "; ".join(f"{a.member.name}: {a.error}" for a in answers if a.status != 200)
        return f"{ready} member(s) ready, quorum is {self.quorum} ({errors})"

    async def metadata(self) -> dict:
        if self._metadata is not None:
            return self._metadata
        answers = await self._ask_all("GET", "", self.member_timeout)
        known = [a.response for a in answers if a.response is not None]
        if not known:
            errors = {a.member.name: a.error for a in answers}
            raise ProtocolError("no member answered its metadata", 503, member_errors=errors)
        vocabulary: list[str] = []
        for member_metadata in known:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                vocabulary += json.loads(member_metadata["parameters"]["vocabulary"])
        vocabulary = list(dict.fromkeys(vocabulary))
        metadata = {
            "name": ENSEMBLE,
            "platform": PLATFORM,
            "inputs": known[0].get("inputs", []),
            "outputs": [
                metadata_tensor(wire.TAGS, "BYTES", [-1]),
                metadata_tensor(wire.SCORES, "FP32", [-1, len(vocabulary)]),
                metadata_tensor(wire.PROVENANCE, "BYTES", [-1]),
            ],
            "parameters": {
                **self.strategy.describe(),
                "quorum": self.quorum,
                "vocabulary": wire.json_text(vocabulary),
            },
        }
        if len(known) == len(self.members):
            self._metadata = metadata  # complete: keep it
        return metadata

    def deadline(self, size: int) -> float:
        """Seconds a member has to answer a request of ``size`` bytes."""
        return self.member_timeout + self.member_seconds_per_mib * size / 2**20

    def member_body(self, request: InferRequest) -> list:
        """The body's parts for the members: the tensors as binary data, binary answers asked."""
        message: dict[str, Any] = {
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": t.shape, "data": t.array}
                for t in request.inputs
            ],
            "parameters": {**request.parameters, "binary_data_output": True},
        }
        if request.id is not None:
            message["id"] = request.id
        parts, _ = binary.encode(message, {t.name for t in request.inputs})
        size = sum(len(part) for part in parts)
        if size > self.member_max_body_bytes:
            raise ProtocolError(
                f"the request's tensors take {size} bytes as binary data, over the members' limit of "
                f"{self.member_max_body_bytes}: send fewer clips per request",
                413,
            )
        return parts

    async def infer(self, request: InferRequest) -> dict:
        wanted = request.output_names
        if wanted is not None:
            select_outputs([{"name": name} for name in OUTPUTS], wanted)  # 400 for an unknown name
        body = self.member_body(request)
        header_length = len(body[0])
        size = sum(len(part) for part in body)
        # A member works on one request at a time: this one waits behind those sent before.
        self._bytes_at_members += size
        try:
            return await self._ask_members(
                request, body, header_length, self.deadline(self._bytes_at_members)
            )
        finally:
            self._bytes_at_members -= size

    async def _ask_members(
        self, request: InferRequest, body: list, header_length: int, deadline: float
    ) -> dict:
        wanted = request.output_names
        headers = {"content-type": "application/octet-stream", binary.HEADER: str(header_length)}
        request_id = current_request_id.get()
        if request_id is not None:  # the members log under the same id
            headers[REQUEST_ID] = request_id
        answers = await infer_members(self.clients, self.members, body, deadline, headers)
        self._log_outcomes(answers)
        # Counted on the event loop's next turn: after this step, which writes the answer.
        asyncio.get_running_loop().call_soon(self._count_calls, answers)
        good = [a for a in answers if a.ok]
        failed = {a.member.name: a.error for a in answers if not a.ok}
        if not good:
            rejected = [a for a in answers if a.outcome == "rejected"]
            if rejected:  # the request itself is at fault: say so as the members did
                self._answers("rejected").inc()
                raise ProtocolError(rejected[0].detail, rejected[0].status)
            self._answers("unavailable").inc()
            raise ProtocolError(_summary("no member answered", failed), 503, member_errors=failed)
        if len(good) < self.quorum:
            self._answers("unavailable").inc()
            message = f"{len(good)} member(s) answered, fewer than the quorum of {self.quorum}"
            raise ProtocolError(_summary(message, failed), 503, member_errors=failed)
        try:
            combined = self.strategy.combine([(a.member.name, a.batch) for a in good])
        except ValueError as e:
            self._answers("unavailable").inc()
            raise ProtocolError(
                f"the members' answers do not agree: {e}", 503, member_errors=failed
            ) from None
        self._answers("degraded" if failed else "complete").inc()
        parameters: dict[str, Any] = {**self.strategy.describe(), "degraded": bool(failed)}
        if failed:
            parameters["failed_members"] = wire.json_text(failed)
        outputs = select_outputs(wire.encode(combined), wanted)
        return infer_response(ENSEMBLE, outputs, request.id, None, parameters)


@dataclass
class _Failing:
    logged_at: float
    total: int = 1
    unlogged: int = 0


def _summary(message: str, failed: dict[str, str]) -> str:
    return message + ": " + "; ".join(f"{name}: {error}" for name, error in failed.items())


def create_gateway_app(
    members,
    strategy: str = "union",
    threshold: float = 0.5,
    weights: dict[str, float] | None = None,
    member_timeout: float = DEFAULT_MEMBER_TIMEOUT,
    quorum: int = 1,
    *,
    member_connections: int = DEFAULT_MEMBER_CONNECTIONS,
    member_seconds_per_mib: float = DEFAULT_MEMBER_SECONDS_PER_MIB,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    member_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    decoder: Decoder | None = None,
):
    """An ASGI app serving the ensemble of ``members`` (announced endpoints ``{"url",
    "model"}`` or ``"NAME=URL"`` strings) under V2 as the model ``ensemble``.

    ``strategy`` is one of ``strategies.STRATEGIES``; ``threshold`` applies to mean and
    weighted, ``weights`` (member name → weight, 1 by default) to weighted. Each member call
    has ``member_timeout`` seconds plus ``member_seconds_per_mib`` per MiB it carries; fewer
    than ``quorum`` answers is a 503. Bodies over ``max_body_bytes`` are refused, and so are
    requests whose tensors would be over ``member_max_body_bytes`` for the members."""
    metrics = ServerMetrics()
    gateway = Gateway(
        members_from(members),
        Strategy(strategy, float(threshold), dict(weights or {})),
        member_timeout,
        quorum,
        metrics,
        member_connections,
        member_seconds_per_mib,
        member_max_body_bytes,
    )
    return build_app(gateway, metrics, max_body_bytes, decoder)


def serve_gateway(
    members,
    strategy: str = "union",
    threshold: float = 0.5,
    weights: dict[str, float] | None = None,
    member_timeout: float = DEFAULT_MEMBER_TIMEOUT,
    quorum: int = 1,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    *,
    member_connections: int = DEFAULT_MEMBER_CONNECTIONS,
    member_seconds_per_mib: float = DEFAULT_MEMBER_SECONDS_PER_MIB,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    member_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    on_ready: Callable[[str], None] | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve the ensemble (see ``create_gateway_app``) until SIGTERM; announces
    ``{"url": ..., "model": "ensemble"}`` once listening. Its readiness follows the members'."""
    from fanflow import runtime

    app = create_gateway_app(
        members,
        strategy,
        threshold,
        weights,
        member_timeout,
        quorum,
        member_connections=member_connections,
        member_seconds_per_mib=member_seconds_per_mib,
        max_body_bytes=max_body_bytes,
        member_max_body_bytes=member_max_body_bytes,
    )

    def ready(url: str) -> None:
        runtime.announce({"url": url, "model": ENSEMBLE})
        if on_ready is not None:
            on_ready(url)

    port = runtime.service_port() if port is None else port
    serve_blocking(app, host, port, on_ready=ready, limits=limits)


def _weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"weight of {name!r} is not a number: {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanflow.serving.gateway",
        description="Serve an ensemble of V2 model servers as one V2 model, 'ensemble'.",
    )
    parser.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="NAME=URL",
        help="a member: its model's name and its server's URL (repeat)",
    )
    parser.add_argument("--strategy", default="union", choices=STRATEGIES)
    parser.add_argument("--threshold", type=float, default=0.5, help="for mean and weighted")
    parser.add_argument(
        "--weight",
        action="append",
        type=_weight,
        default=[],
        metavar="NAME=WEIGHT",
        help="a member's weight for the weighted strategy (default 1)",
    )
    parser.add_argument("--member-timeout", type=float, default=DEFAULT_MEMBER_TIMEOUT, help="seconds")
    parser.add_argument("--quorum", type=int, default=1, help="answer only when this many members answered")
    parser.add_argument(
        "--member-connections",
        type=int,
        default=DEFAULT_MEMBER_CONNECTIONS,
        help="open connections per member",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--member-seconds-per-mib",
        type=float,
        default=DEFAULT_MEMBER_SECONDS_PER_MIB,
        help="added to --member-timeout per MiB a member call carries",
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--member-max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    add_limit_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve_gateway(
            args.member,
            args.strategy,
            args.threshold,
            dict(args.weight),
            args.member_timeout,
            args.quorum,
            args.host,
            args.port,
            member_connections=args.member_connections,
            member_seconds_per_mib=args.member_seconds_per_mib,
            max_body_bytes=args.max_body_bytes,
            member_max_body_bytes=args.member_max_body_bytes,
            on_ready=lambda url: print(url, flush=True),
            limits=limits_from(args),
        )
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
