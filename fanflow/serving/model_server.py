"""One model behind an Open Inference Protocol (KServe V2) endpoint.

The server listens at once and loads its model in the background: until the model is
loaded, readiness and inference answer 503. Inference runs on one worker thread, off the
event loop, with torch limited to one thread unless told otherwise.

    python -m fanflow.serving.model_server --store STORE --artifact sha256:HEX.suffix --name cnn
    python -m fanflow.serving.model_server --model model.file --name cnn --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fanflow.serving import wire
from fanflow.serving.connections import Limits
from fanflow.serving.decoding import Decoder
from fanflow.serving.endpoints import build_app
from fanflow.serving.metrics import ServerMetrics
from fanflow.serving.predictor import LoadedModel, candidate_name, load_model, model_name
from fanflow.serving.protocol import (
    DEFAULT_MAX_BODY_BYTES,
    InferRequest,
    ProtocolError,
    check_model_name,
    check_unit_clips,
    infer_response,
    metadata_tensor,
    select_outputs,
)
from fanflow.serving.server import DEFAULT_HOST, add_limit_options, limits_from, serve_blocking
from fanflow.stores.artifacts import ArtifactStore

log = logging.getLogger(__name__)

PLATFORM = "fanflow_predictor"


class ModelServer:
    """The served side of a model server (see ``endpoints.Served``)."""

    def __init__(
        self,
        model: Any,
        name: str | None = None,
        *,
        loader: Callable[[Path], Any] | str | None = None,
        store: ArtifactStore | str | os.PathLike | None = None,
        torch_threads: int | None = 1,
        metrics: ServerMetrics | None = None,
    ):
        self.name = check_model_name(model_name(model, name))
        self.candidate = candidate_name(model)
        self.version: str | None = None
        self.model: LoadedModel | None = None
        self.error: str | None = None
        self._load = lambda: load_model(model, loader=loader, store=store, torch_threads=torch_threads)
        self._loading: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.metrics = metrics or ServerMetrics()
        self._inference = self.metrics.histogram(
            "fanflow_inference_duration_seconds", "Time spent in predict_proba per request"
        )
        self._clips = self.metrics.counter("fanflow_inference_clips", "Clips tagged")

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{self.name}")
        self._loading = asyncio.create_task(self._load_in_worker())

    async def _load_in_worker(self) -> None:
        try:
            model = await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            log.error("model %s failed to load: %s", self.name, self.error)
            return
        self.model, self.version = model, model.version

    async def wait_loaded(self) -> LoadedModel:
        """The loaded model, once it is; raises RuntimeError if loading failed."""
        assert self._loading is not None, "the app has not started"
        await asyncio.shield(self._loading)
        if self.model is None:
            raise RuntimeError(f"model {self.name} failed to load: {self.error}")
        return self.model

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- protocol -----------------------------------------------------------------------
    def _not_ready(self) -> str | None:
        if self.model is not None:
            return None
        return f"failed to load: {self.error}" if self.error else "loading"

    async def readiness(self) -> str | None:
        return self._not_ready()

    def _ready_model(self) -> LoadedModel:
        if self.model is None:
            raise ProtocolError(f"model '{self.name}' is not ready: {self._not_ready()}", 503)
        return self.model

    async def metadata(self) -> dict:
        model = self._ready_model()
        metadata: dict[str, Any] = {"name": self.name}
        if self.version:
            metadata["versions"] = [self.version]
        metadata["platform"] = PLATFORM
        metadata["inputs"] = [metadata_tensor(wire.INPUT, "FP32", [-1, *model.input_shape])]
        metadata["outputs"] = [
            metadata_tensor(wire.TAGS, "BYTES", [-1]),
            metadata_tensor(wire.SCORES, "FP32", [-1, len(model.tags)]),
        ]
        metadata["parameters"] = {
            "vocabulary": wire.json_text(list(model.tags)),
            "threshold": model.threshold,
        }
        if self.candidate is not None:  # the training candidate's full name, e.g. cnn[lr=0.01]
            metadata["parameters"]["candidate"] = self.candidate
        return metadata

    def _check_and_predict(self, model: LoadedModel, request: InferRequest) -> np.ndarray:
        # In the inference thread: checking a large batch's values takes a while too.
        clips = check_unit_clips(request.inputs[0], model.input_shape)
        return model.predict(clips)

    async def infer(self, request: InferRequest) -> dict:
        model = self._ready_model()
        if len(request.inputs) != 1 or request.inputs[0].name != wire.INPUT:
            names = [t.name for t in request.inputs]
            raise ProtocolError(f"this model takes one input '{wire.INPUT}', got {names}")
        wanted = request.output_names
        if wanted is not None:
            select_outputs([{"name": wire.TAGS}, {"name": wire.SCORES}], wanted)
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._executor, self._check_and_predict, model, request)
        self._inference.observe(time.perf_counter() - start)
        self._clips.inc(len(scores))
        batch = wire.TagBatch(
            tags=tag_lists(scores, model.tags, model.threshold),
            vocabulary=list(model.tags),
            scores=scores,
            threshold=model.threshold,
        )
        outputs = select_outputs(wire.encode(batch), wanted)
        return infer_response(self.name, outputs, request.id, self.version)


def tag_lists(scores: np.ndarray, tags: tuple[str, ...], threshold: float) -> list[list[str]]:
    """Per clip, the tags whose score reaches ``threshold``, in vocabulary order."""
    return [[tags[j] for j in np.flatnonzero(row >= threshold)] for row in scores]


def create_model_app(
    model: Any,
    name: str | None = None,
    *,
    loader: Callable[[Path], Any] | str | None = None,
    store: ArtifactStore | str | os.PathLike | None = None,
    torch_threads: int | None = 1,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    decoder: Decoder | None = None,
):
    """An ASGI app serving one model under V2.

    ``model`` is a predictor, a selected candidate (``{"model": path, "name": ...}``), an
    ``ArtifactPath``, an artifact reference (``"sha256:HEX.suffix"``, with ``store``) or a
    model file; files are read by ``loader`` (``fanflow.ml.models:load_model`` by default)
    after their hash is checked. The model loads when the app starts.
    """
    metrics = ServerMetrics()
    served = ModelServer(
        model, name, loader=loader, store=store, torch_threads=torch_threads, metrics=metrics
    )
    return build_app(served, metrics, max_body_bytes, decoder)


def serve_model(
    model: Any,
    name: str | None = None,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    *,
    loader: Callable[[Path], Any] | str | None = None,
    store: ArtifactStore | str | os.PathLike | None = None,
    torch_threads: int | None = 1,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    on_ready: Callable[[str], None] | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve ``model`` (see ``create_model_app``) until SIGTERM, with connection ``limits``
    (``connections.Limits``).

    Binds ``port`` (by default the service port the workflow engine gives, 0 meaning a free
    one). Once the model is loaded, announces ``{"url": ..., "model": name}``; a model that
    fails to load stops the server with RuntimeError.
    """
    from fanflow import runtime

    app = create_model_app(
        model, name, loader=loader, store=store, torch_threads=torch_threads, max_body_bytes=max_body_bytes
    )
    served: ModelServer = app.state.served

    def ready(url: str) -> None:
        runtime.announce({"url": url, "model": served.name})
        if on_ready is not None:
            on_ready(url)

    port = runtime.service_port() if port is None else port
    serve_blocking(app, host, port, ready=served.wait_loaded, on_ready=ready, limits=limits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanflow.serving.model_server",
        description="Serve one model under the Open Inference Protocol (KServe V2 REST).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--artifact", help="the model file in the artifact store: sha256:HEX[.suffix]")
    source.add_argument("--model", help="a model file")
    parser.add_argument("--store", help="the artifact store's folder or URL (with --artifact)")
    parser.add_argument("--name", help="the model's name in URLs (default: 'model')")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="port to bind; 0 picks a free one")
    parser.add_argument("--loader", default=None, help="module:function that loads a model file")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    add_limit_options(parser)
    args = parser.parse_args(argv)
    if args.artifact and not args.store:
        parser.error("--artifact needs --store")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve_model(
            args.artifact or args.model,
            args.name,
            args.host,
            args.port,
            loader=args.loader,
            store=args.store,
            torch_threads=args.torch_threads,
            max_body_bytes=args.max_body_bytes,
            on_ready=lambda url: print(url, flush=True),
            limits=limits_from(args),
        )
    except (OSError, RuntimeError, ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
