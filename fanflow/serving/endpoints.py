"""The V2 endpoints every fanflow server answers, around one served model.

A server (a model server or the ensemble gateway) is a :class:`Served` object; this module
turns it into a Starlette app with the protocol's routes, its error shape and ``/metrics``.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fanflow.serving.metrics import MetricsMiddleware, ServerMetrics
from fanflow.serving.protocol import (
    DEFAULT_MAX_BODY_BYTES,
    EXCEPTION_HANDLERS,
    ProtocolError,
    error_response,
    json_response,
    read_body,
)

SERVER_NAME = "fanflow"
SERVER_VERSION = "0.1.0"


class Served(Protocol):
    name: str
    version: str | None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def readiness(self) -> str | None:
        """None when ready to answer inference requests, else why not."""

    async def metadata(self) -> dict: ...

    async def infer(self, body: bytes) -> dict:
        """The response to an inference request's body; raises ProtocolError to refuse it."""


def build_app(
    served: Served, metrics: ServerMetrics, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Starlette:
    def check(request: Request) -> None:
        name = request.path_params["name"]
        if name != served.name:
            raise ProtocolError(f"unknown model '{name}'; this server serves '{served.name}'", 404)
        version = request.path_params.get("version")
        if version is not None and version != served.version:
            known = f"version '{served.version}'" if served.version else "no versions"
            raise ProtocolError(f"model '{name}' has no version '{version}' (it has {known})", 404)

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []})

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        reason = await served.readiness()
        if reason is not None:
            return error_response(f"not ready: {reason}", 503, ready=False)
        return json_response({"ready": True})

    async def model_metadata(request: Request) -> Response:
        check(request)
        return json_response(await served.metadata())

    async def model_ready(request: Request) -> Response:
        check(request)
        reason = await served.readiness()
        if reason is not None:
            return error_response(
                f"model '{served.name}' is not ready: {reason}", 503, name=served.name, ready=False
            )
        return json_response({"name": served.name, "ready": True})

    async def infer(request: Request) -> Response:
        check(request)
        body = await read_body(request, max_body_bytes)
        return json_response(await served.infer(body))

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
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await served.start()
        try:
            yield
        finally:
            await served.stop()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.served = served
    return app
