"""The page for the people who use the tags: choose one of a run's held-out clips or upload a
short video, watch it, and see the tags the served ensemble finds in it, each with the models
that found it and their scores, how long the answer took, and a banner when a member did not
answer (the answer is then degraded, and the banner names the member).

It talks to a running gateway: the one ``fanflow serve RUN`` (or this page) brought up for
the run, or any gateway URL given. Uploads are bounded in size and type, written only to a
temporary folder, decoded with the data sources' checks (``fanflow.ml.video``) and deleted."""

from __future__ import annotations

import base64
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fanflow import background
from fanflow.errors import RunNotFound
from fanflow.ml.video import VIDEO_SUFFIXES, to_unit, write_video
from fanflow.serving.client import ClientError, V2Client
from fanflow.serving.gateway import ENSEMBLE
from fanflow.serving.tagging import ClipError, Tagged, read_clips, tag_clips
from fanflow.spec.errors import SpecError
from fanflow.vocab.manifest import ARTIFACT_KEY

MAX_UPLOAD = 20 << 20  # bytes of one uploaded video
CLIPS_SHOWN = 12
SERVE_TIMEOUT = 300.0


@dataclass
class ClipSet:
    """A run's held-out clips: the data step's ``test`` split (see ``fanflow.ml.sources``)."""

    task: str
    x: dict  # the artifact reference of the (N, T, H, W) array
    y: dict | None
    tags: list[str]

    def load(self, artifacts) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.load(artifacts.path(self.x[ARTIFACT_KEY], self.x.get("suffix", "")), mmap_mode="r",
                    allow_pickle=False)
        y = None
        if self.y is not None:
            y = np.load(artifacts.path(self.y[ARTIFACT_KEY], self.y.get("suffix", "")), mmap_mode="r",
                        allow_pickle=False)
        return x, y


def clip_set(ui, run_id: str) -> ClipSet | None:
    workflow = ui.history.workflow(run_id)
    for name, step in workflow.steps.items():
        if step.fan_out:
            continue
        for task in ui.history.tasks(run_id, step=name, states=["succeeded"], limit=1):
            out = task.manifest
            test = out.get("test") if isinstance(out, dict) else None
            if isinstance(test, dict) and isinstance(test.get("x"), dict) and ARTIFACT_KEY in test["x"] \
                    and test["x"].get("format") == "npy" and isinstance(out.get("tags"), list):
                return ClipSet(task.name, test["x"], test.get("y") if isinstance(test.get("y"), dict) else None,
                               [str(t) for t in out["tags"]])
    return None


def _origin(ui, run_id: str) -> str:
    """The run whose models are served: a run that resumes a succeeded run (``fanflow
    serve``, ``fanflow resume``) serves that run's models."""
    run = ui.history.summary(run_id)
    seen = {run.id}
    while run.resumed_from and run.resumed_from not in seen:
        try:
            earlier = ui.history.summary(run.resumed_from)
        except RunNotFound:
            break
        if earlier.state != "succeeded":
            break
        run = earlier
        seen.add(run.id)
    return run.id


def live_gateway(ui, run_id: str) -> str | None:
    """The URL of a gateway serving ``run_id``'s models that answers now, if any."""
    candidates = [run_id] + [r.id for r in ui.history.find(limit=100) if r.resumed_from == run_id]
    for candidate in candidates:
        for task in ui.history.tasks(candidate, states=["serving"]):
            endpoint = task.manifest
            if isinstance(endpoint, dict) and endpoint.get("model") == ENSEMBLE and _answers(endpoint.get("url")):
                return endpoint["url"]
    return None


def _answers(url) -> bool:
    if not isinstance(url, str):
        return False
    try:
        return httpx.get(url.rstrip("/") + "/v2/health/live", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def servable_runs(ui) -> list:
    """Recent succeeded runs with services (a gateway to ask) and held-out clips to show."""
    found: dict[str, object] = {}
    for run in ui.history.find(limit=30, states={"succeeded"}):
        origin = _origin(ui, run.id)
        if origin not in found and any(s.kind == "service" for s in ui.history.workflow(origin).steps.values()):
            found[origin] = run if origin == run.id else ui.history.summary(origin)
    return list(found.values())


def tag_page(request: Request) -> Response:
    ui = request.app.state.ui
    runs = servable_runs(ui)
    run_id = request.query_params.get("run") or (runs[0].id if runs else None)
    context = {"runs": runs, "run": None, "clips": [], "gateway": None, "starting": None}
    if run_id:
        try:
            run_id = _origin(ui, run_id)
            context["run"] = ui.history.summary(run_id)
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        clips = clip_set(ui, run_id)
        if clips is not None:
            _, y = clips.load(ui.artifacts)
            count = min(CLIPS_SHOWN, len(y) if y is not None else CLIPS_SHOWN)
            context["clips"] = [
                {"index": i, "tags": [] if y is None else [t for t, on in zip(clips.tags, y[i], strict=False) if on]}
                for i in range(count)
            ]
        given = request.query_params.get("gateway", "").strip()
        context["gateway"] = given if _is_http(given) else live_gateway(ui, run_id)
        starting = ui.serving.get(run_id)
        context["starting"] = starting.run_id if starting is not None and starting.alive() else None
    return ui.templates.TemplateResponse(request, "tag.html", context)


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


async def start_gateway(request: Request) -> Response:
    """Bring the run's servers and gateway back up (``fanflow serve RUN``), kept until the UI stops."""
    ui = request.app.state.ui
    form = await request.form()
    run_id = str(form.get("run", ""))
    try:
        run_id = _origin(ui, run_id)
        running = ui.serving.get(run_id)
        if running is None or not running.alive():
            ui.serving[run_id] = await run_in_threadpool(
                lambda: background.start(serve=run_id, home=ui.project.home))
    except (RunNotFound, SpecError, background.LaunchError) as exc:
        return ui.templates.TemplateResponse(request, "problem.html",
                                             {"message": str(exc), "back": f"/tag?run={quote(run_id)}"},
                                             status_code=409)
    return RedirectResponse(f"/tag?run={quote(run_id)}", status_code=303)


def gateway_status(request: Request) -> Response:
    ui = request.app.state.ui
    run_id = request.query_params.get("run", "")
    starting = ui.serving.get(run_id)
    failed = starting is not None and not starting.alive()
    return JSONResponse({"url": live_gateway(ui, run_id), "failed": failed,
                         "log": starting.log.read_text(errors="replace")[-1500:] if failed else None})


def clip_gif(request: Request) -> Response:
    ui = request.app.state.ui
    clips = clip_set(ui, request.query_params.get("run", ""))
    if clips is None:
        raise HTTPException(404, "this run has no held-out clips")
    x, _ = clips.load(ui.artifacts)
    try:
        index = int(request.query_params.get("index", ""))
        clip = x[index]
    except (ValueError, IndexError):
        raise HTTPException(404, "no such clip") from None
    return Response(_gif(np.asarray(clip)), media_type="image/gif", headers={"cache-control": "private, max-age=3600"})


def _gif(clip: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory(prefix="fanflow-ui-") as folder:
        path = write_video(clip, Path(folder) / "clip.gif", scale=max(1, 128 // max(clip.shape[-2:])))
        return path.read_bytes()


async def tag(request: Request) -> Response:
    """Tag a held-out clip (``clip``: its index) or an uploaded video (``video``) with the
    gateway at ``gateway``; answers the result as an HTML fragment."""
    ui = request.app.state.ui
    length = int(request.headers.get("content-length") or 0)
    if not length or length > MAX_UPLOAD + (64 << 10):
        return _result(request, error=f"the upload must be at most {MAX_UPLOAD >> 20} MB", status=413)
    async with request.form(max_files=1, max_fields=10) as form:
        url = str(form.get("gateway", ""))
        if not _is_http(url):
            return _result(request, error="no gateway to ask: start one, or give its URL", status=400)
        upload = form.get("video")
        try:
            if upload is not None and getattr(upload, "filename", None):
                suffix = Path(upload.filename).suffix.lower()
                if suffix not in VIDEO_SUFFIXES:
                    raise ClipError(f"{upload.filename}: expected a video ({', '.join(VIDEO_SUFFIXES)})")
                data = await upload.read(MAX_UPLOAD + 1)
                if len(data) > MAX_UPLOAD:
                    raise ClipError(f"{upload.filename}: larger than {MAX_UPLOAD >> 20} MB")
                answer, shown = await run_in_threadpool(_tag_upload, url, data, suffix, upload.filename)
                label = upload.filename
            else:
                run_id, index = str(form.get("run", "")), str(form.get("clip", ""))
                answer, shown = await run_in_threadpool(_tag_clip, ui, url, run_id, index)
                label = f"held-out clip {index}"
        except (ClientError, ClipError, ValueError) as exc:
            return _result(request, error=str(exc), status=422)
    return _result(request, answer=answer, shown=shown, label=label, gateway=url)


def _tag_upload(url: str, data: bytes, suffix: str, name: str) -> tuple[Tagged, str]:
    with V2Client(url) as client, tempfile.TemporaryDirectory(prefix="fanflow-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            clips = read_clips(path, client.input_shape())
        except ClipError as exc:
            raise ClipError(str(exc).replace(str(path), name)) from None
        shown = _gif(clips[0])
        return tag_clips(client, clips), _data_uri(shown)


def _tag_clip(ui, url: str, run_id: str, index: str) -> tuple[Tagged, str]:
    clips = clip_set(ui, run_id)
    if clips is None:
        raise ClipError(f"run {run_id} has no held-out clips")
    x, _ = clips.load(ui.artifacts)
    try:
        clip = np.asarray(x[int(index)])
    except (ValueError, IndexError):
        raise ClipError(f"run {run_id} has no clip {index!r}") from None
    with V2Client(url) as client:
        if tuple(clip.shape) != client.input_shape():
            raise ClipError(f"the gateway takes clips shaped {client.input_shape()}, this run's are {clip.shape}")
        return tag_clips(client, to_unit(clip)[None]), f"/tag/clip?run={quote(run_id)}&index={int(index)}"


def _data_uri(gif: bytes) -> str:
    return "data:image/gif;base64," + base64.b64encode(gif).decode()


def _result(request: Request, status: int = 200, **context) -> Response:
    ui = request.app.state.ui
    context = {"answer": None, "error": None, "shown": None, "label": None, "gateway": None,
               "asked": time.time(), **context}
    return ui.templates.TemplateResponse(request, "_tags.html", context, status_code=status)


def stop_gateways(ui) -> None:
    """Stop the servers this UI brought up (on shutdown)."""
    for launched in ui.serving.values():
        launched.cancel()
    for launched in ui.serving.values():
        try:
            launched.wait(30)
        except Exception:
            launched.process.kill()


routes = [
    Route("/tag", tag_page),
    Route("/tag", tag, methods=["POST"]),
    Route("/tag/serve", start_gateway, methods=["POST"]),
    Route("/tag/gateway", gateway_status),
    Route("/tag/clip", clip_gif),
]
