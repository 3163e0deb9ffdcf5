"""The V2 endpoints every fanflow server answers, around one served model.

A server (a model server or the ensemble gateway) is a :class:`Served` object; this module
turns it into a Starlette app with the protocol's routes, its error shape, request ids and
``/metrics``. Inference requests are read by a ``decoding.Decoder`` (large ones off the event
loop) and answered as JSON or with binary outputs, as the request asks (``binary``); a client
that hangs up cancels the work still waiting for it.

Inference, the path every answer takes, is a plain ASGI app (``InferEndpoint``) in front of
Starlette's routing: the same ids, metrics and error shapes, without the router, the
middleware and the request and response objects (about a tenth of a gateway's time per
request). Every other endpoint is a Starlette route.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fanflow.serving import binary
from fanflow.serving.connections import HANG_UP
from fanflow.serving.decoding import Decoder
from fanflow.serving.metrics import DISCONNECTED, LabelCache, MetricsMiddleware, ServerMetrics
from fanflow.serving.protocol import DEFAULT_MAX_BODY_BYTES, InferRequest, ProtocolError, json_bytes

log = logging.getLogger(__name__)

SERVER_NAME = "fanflow"
SERVER_VERSION = "0.1.0"
REQUEST_ID = "x-request-id"
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class Served(Protocol):
    name: str
    version: str | None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def readiness(self) -> str | None:
        """None when ready to answer inference requests, else why not."""

    async def metadata(self) -> dict: ...

    async def infer(self, request: InferRequest) -> dict:
        """The answer to a checked request (outputs' ``data`` as arrays or lists); raises
        ProtocolError to refuse it."""


# -- errors -----------------------------------------------------------------------------


def json_response(content, status: int = 200, headers: dict | None = None) -> Response:
    return JSONResponse(content, status_code=status, headers=headers)


def error_response(message: str, status: int, headers: dict | None = None, **extra) -> Response:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    return error_response(exc.message, exc.status, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    return error_response(message, exc.status_code, headers=exc.headers)  # 405 keeps its Allow


async def _disconnected(request: Request, exc: Exception) -> Response:
    request.scope[DISCONNECTED] = True  # counted apart from errors; the answer goes nowhere
    return Response(status_code=499)


EXCEPTION_HANDLERS = {
    ProtocolError: _protocol_error,
    HTTPException: _http_error,
    ClientDisconnect: _disconnected,
}


def request_id_of(scope: Scope) -> str:
    """The request's id: the client's ``X-Request-Id`` when it is a short token, else a new one."""
    given = ""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            break
    return given if _GOOD_REQUEST_ID.fullmatch(given) else _new_request_id()


class _RequestIds:
    """New request ids: 32 hexadecimal digits, a random half chosen once per process (again in
    a forked child) and a counter; a uuid4 per request costs ten times as much."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_new_request_id = _RequestIds()


def internal_error(request_id: str) -> str:
    return f"internal error; the server's log has it under request id {request_id}"


class RequestIdMiddleware:
    """Gives each request an id (the client's ``X-Request-Id`` when it is a short token),
    answered in the same header. A failure of the server itself is logged under that id and
    answered 500 with the id only: no exception text leaves the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope[REQUEST_ID] = request_id
        current_request_id.set(request_id)

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope["method"], scope["path"][:200])
            if not started:
                await error_response(internal_error(request_id), 500)(scope, receive, send_with_id)


# -- requests ---------------------------------------------------------------------------


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """A request's body as it arrives; ClientDisconnect when the client hangs up first."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def read_body(
    chunks: AsyncIterator[bytes], length: str | None, max_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> bytes | bytearray:
    """The request body (its ``chunks``, ``length`` its Content-Length header), refused with
    413 past ``max_bytes`` and with 400 when empty. A body of known length is read into one
    buffer of that size: gathering the pieces and joining them would hold the body twice."""
    expected = int(length) if length is not None and length.isdigit() else None
    if expected is not None and expected > max_bytes:
        raise ProtocolError(f"request body of {expected} bytes is over the limit of {max_bytes}", 413)
    if expected is not None and expected > 65536:
        # The HTTP parser hands over exactly Content-Length bytes (or the client hung up).
        body: bytes | bytearray = bytearray(expected)
        size = 0
        async for chunk in chunks:
            body[size : size + len(chunk)] = chunk
            size += len(chunk)
    else:
        pieces = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise ProtocolError(f"request body is over the limit of {max_bytes} bytes", 413)
            pieces.append(chunk)
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if not size or (size <= 65536 and not body.strip()):  # a large blank body fails as JSON
        raise ProtocolError("empty request body: expected an inference request (JSON)")
    return body


async def until_disconnected(receive: Receive, work: Coroutine, hang_up_watch=None):
    """Await the coroutine ``work`` in this task, cancelled if the client hangs up first
    (ClientDisconnect then). The work runs in the request's own task: a task of its own would
    cost a hop through the event loop on every answer. ``hang_up_watch`` is the server's
    ``connections.HANG_UP`` when it has one; else a task waits for the client's disconnect."""
    task = asyncio.current_task()
    assert task is not None
    hung_up = False

    def lost() -> None:
        nonlocal hung_up
        hung_up = True
        task.cancel()

    async def wait_for_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        lost()

    if hang_up_watch is None:
        stop_watching = asyncio.ensure_future(wait_for_disconnect()).cancel
    elif hang_up_watch(lost):
        stop_watching = functools.partial(hang_up_watch, None)
    else:  # the connection is already going
        work.close()
        raise ClientDisconnect()
    try:
        # This task is suspended only inside ``work``, so the cancel always lands there.
        return await work
    except asyncio.CancelledError:
        if not hung_up:
            raise
        task.uncancel()
        raise ClientDisconnect() from None
    finally:
        stop_watching()


def answer(response: dict, request: InferRequest) -> tuple[list, list[tuple[bytes, bytes]]]:
    """An inference answer's body parts and headers, with the outputs the request asked as
    binary data."""
    wanted = request.binary_outputs([o["name"] for o in response["outputs"]])
    parts, json_length = binary.encode(response, wanted)
    if json_length is None:
        return parts, _JSON
    return parts, [(b"content-type", b"application/octet-stream"), (_BINARY_HEADER, b"%d" % json_length)]


_JSON = [(b"content-type", b"application/json")]
_BINARY_HEADER = binary.HEADER.lower().encode()
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
INFER_ENDPOINTS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


class InferEndpoint:
    """``POST /v2/models/{name}[/versions/{version}]/infer`` as a plain ASGI app: a request id
    answered in ``X-Request-Id``, the protocol's errors (405 with ``Allow`` for another
    method), a client that hangs up counted apart, and the metrics recorded once the answer
    is sent."""

    def __init__(
        self,
        served: Served,
        metrics: ServerMetrics,
        decoder: Decoder,
        max_body_bytes: int,
        check: Callable[[str, str | None], None],
    ):
        self.served = served
        self.metrics = metrics
        self._requests = LabelCache(metrics.requests)
        self._latency = LabelCache(metrics.latency)
        self.decoder = decoder
        self.max_body_bytes = max_body_bytes
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        name, version = INFER_PATH.fullmatch(scope["path"]).groups()  # type: ignore[union-attr]
        request_id = request_id_of(scope)
        current_request_id.set(request_id)
        try:
            if scope["method"] != "POST":
                message = f"method {scope['method']} is not allowed on {scope['path'][:200]}"
                raise ProtocolError(message, 405)
            parts, headers = await self.infer(scope, receive, name, version)
            status = 200
        except ProtocolError as e:
            status, parts, headers = e.status, [json_bytes({"error": e.message, **e.extra})], _JSON
            if status == 405:
                headers = [*headers, (b"allow", b"POST")]
        except ClientDisconnect:  # counted apart from errors; the answer would go nowhere
            self.metrics.disconnects.labels(INFER_ENDPOINTS[version is not None]).inc()
            return
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope["method"], scope["path"][:200])
            status, parts, headers = 500, [json_bytes({"error": internal_error(request_id)})], _JSON
        size = sum(len(part) for part in parts)
        headers = [*headers, (b"content-length", b"%d" % size), (REQUEST_ID.encode(), request_id.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": parts[0] if len(parts) == 1 else b"".join(parts)})
        endpoint = INFER_ENDPOINTS[version is not None]
        self._requests(endpoint, scope["method"], str(status)).inc()
        self._latency(endpoint).observe(time.perf_counter() - start)

    async def infer(
        self, scope: Scope, receive: Receive, name: str, version: str | None
    ) -> tuple[list, list[tuple[bytes, bytes]]]:
        self.check(name, version)
        length = json_length = None
        for header, value in scope["headers"]:
            if header == b"content-length" and length is None:
                length = value.decode("latin-1")
            elif header == _BINARY_HEADER and json_length is None:
                json_length = value.decode("latin-1")
        async with self.decoder.admit(length, json_length is not None):
            body = await read_body(body_chunks(receive), length, self.max_body_bytes)
            header_length = binary.header_length(json_length, len(body))

            async def work() -> tuple[list, list[tuple[bytes, bytes]]]:
                parsed = await self.decoder.decode(body, header_length)
                return answer(await self.served.infer(parsed), parsed)

            return await until_disconnected(receive, work(), scope.get(HANG_UP))


class V2App(Starlette):
    """The server's app: inference requests go to ``infer`` (an ``InferEndpoint``), every
    other request to Starlette's routes."""

    def __init__(self, infer: InferEndpoint, **options) -> None:
        super().__init__(**options)
        self.infer = infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and INFER_PATH.fullmatch(scope["path"]):
            await self.infer(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


# -- the app ----------------------------------------------------------------------------


def build_app(
    served: Served,
    metrics: ServerMetrics,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    decoder: Decoder | None = None,
) -> V2App:
    decoder = decoder or Decoder()

    def check(name: str, version: str | None = None) -> None:
        if name != served.name:
            raise ProtocolError(f"unknown model '{name[:200]}'; this server serves '{served.name}'", 404)
        if version is not None and version != served.version:
            known = f"version '{served.version}'" if served.version else "no versions"
            raise ProtocolError(f"model '{name}' has no version '{version[:200]}' (it has {known})", 404)

    async def server_metadata(request: Request) -> Response:
        return json_response(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": [binary.EXTENSION]}
        )

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        reason = await served.readiness()
        if reason is not None:
            return error_response(f"not ready: {reason}", 503, ready=False)
        return json_response({"ready": True})

    async def model_metadata(request: Request) -> Response:
        check(request.path_params["name"], request.path_params.get("version"))
        return json_response(await served.metadata())

    async def model_ready(request: Request) -> Response:
        check(request.path_params["name"], request.path_params.get("version"))
        reason = await served.readiness()
        if reason is not None:
            return error_response(
                f"model '{served.name}' is not ready: {reason}", 503, name=served.name, ready=False
            )
        return json_response({"name": served.name, "ready": True})

    async def repository_index(request: Request) -> Response:
        # The model-repository extension's index, so that a client given only a server's
        # address can find the model it serves.
        reason = await served.readiness()
        entry = {"name": served.name, "state": "READY" if reason is None else "UNAVAILABLE"}
        if served.version:
            entry["version"] = served.version
        if reason is not None:
            entry["reason"] = reason
        return json_response([entry])

    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/", server_metadata, methods=["GET"]),  # as the protocol's OpenAPI document writes it
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await decoder.start()
        await served.start()
        try:
            yield {"refused": metrics.refused}  # uvicorn hands it to connections.GuardedProtocol
        finally:
            await served.stop()
            await decoder.stop()

    app = V2App(
        InferEndpoint(served, metrics, decoder, max_body_bytes, check),
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware), Middleware(MetricsMiddleware, metrics=metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a redirect would be built from the client's Host header
    app.state.served = served
    return app
