"""A run's page: its graph with live states, its failures, its results (the leaderboard and
report of the reference workflow among them), a timeline of every attempt, and a panel per
task (its progress bar and latest metrics, attempts, errors and tracebacks, stdout and stderr
followed while it runs, inputs and outputs); with the files its tasks stored, served under readable names."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from fanflow.errors import RunNotFound
from fanflow.history import FINAL_STATES, RunSummary
from fanflow.spec import graph as spec_graph
from fanflow.spec.model import Workflow
from fanflow.ui import graph
from fanflow.ui.artifacts import FileView, media_type
from fanflow.ui.live import EVERY, RunFeed, service_urls, stream
from fanflow.ui.security import STORED_POLICY
from fanflow.vocab.states import OK

OK_STATES = {state.value for state in OK}
BRANCH_PAGE = 100
FAILURES_SHOWN = 20
LOG_CHUNK = 256 << 10  # bytes of a log sent at once


@dataclass
class Page:
    """What the run page shows, read once per request."""

    run: RunSummary
    workflow: Workflow
    graph: graph.GraphView
    failures: list
    results: list  # OutputView of each task of a step that does not fan out, in declared order


def _run(request: Request) -> tuple[RunSummary, Workflow]:
    ui = request.app.state.ui
    try:
        run = ui.history.summary(request.path_params["run_id"])
        return run, ui.history.workflow(run.id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None


def file_url(run_id: str, file: FileView, download: bool = False) -> str:
    from urllib.parse import quote, urlencode

    query = {"task": file.task, **({"download": "1"} if download else {})}
    return f"/runs/{quote(run_id)}/file/{quote(file.digest)}?{urlencode(query)}"


def run_page(request: Request) -> Response:
    ui = request.app.state.ui
    rendered = time.time()
    run, workflow = _run(request)
    counts = ui.history.step_counts(run.id)
    urls = service_urls(ui.history, run.id, workflow)
    view = graph.layout(workflow, graph.statuses(workflow, counts, urls))
    failures = ui.history.tasks(run.id, states=["failed"], limit=FAILURES_SHOWN)
    results = []
    for name, step in workflow.steps.items():
        if step.fan_out:
            continue
        for task in ui.history.tasks(run.id, step=name, states=sorted(OK_STATES), limit=1):
            if task.manifest is not None:
                results.append(ui.artifacts.output(task.name, task.manifest, lambda f: file_url(run.id, f)))
    page = Page(run, workflow, view, failures, results)
    special = [f for output in results for f in output.files if f.kind in ("leaderboard", "report")]
    return ui.templates.TemplateResponse(request, "run.html", {
        "page": page, "run": run, "special": special, "file_url": file_url,
        "leaves": set(spec_graph.leaves(workflow)),
        "failed_total": run.counts.get("failed", 0),
        "stream": f"/runs/{run.id}/stream?since={rendered:.3f}&created={sum(sum(c.values()) for c in counts.values())}",
    })


def run_stream(request: Request) -> Response:
    ui = request.app.state.ui
    run, workflow = _run(request)
    try:  # what the page was made from: the stream sends what changed since
        since = float(request.query_params.get("since", 0))
        created = int(request.query_params.get("created", 0))
    except ValueError:
        raise HTTPException(400, "since and created must be numbers") from None
    feed = RunFeed(ui.history, run.id, workflow, since, created)
    return stream(request, feed.poll, lambda: feed.done, feed.every)


def task_panel(request: Request) -> Response:
    ui = request.app.state.ui
    run, workflow = _run(request)
    name = request.query_params.get("name", "")
    task = ui.history.task(run.id, name)
    if task is None:
        raise HTTPException(404, f"run {run.id} has no task {name!r}")
    step = workflow.steps.get(task.step)
    attempts = ui.history.attempts(run.id, task.name)
    output = None
    if task.state in OK_STATES and task.manifest is not None:
        output = ui.artifacts.output(task.name, task.manifest, lambda f: file_url(run.id, f))
    inputs = ui.history.inputs(run.id, task.name)
    return ui.templates.TemplateResponse(request, "_task.html", {
        "run": run, "task": task, "step": step, "attempts": attempts, "output": output, "inputs": inputs,
        "file_url": file_url, "live": task.state not in FINAL_STATES,
        "progress": ui.history.progress(run.id, task.name), "every": EVERY,
    })


def task_progress(request: Request) -> Response:
    """A task's progress section alone: what the panel reloads while the task runs."""
    ui = request.app.state.ui
    run, _ = _run(request)
    task = ui.history.task(run.id, request.query_params.get("name", ""))
    if task is None:
        raise HTTPException(404, "no such task")
    return ui.templates.TemplateResponse(request, "_progress.html", {
        "task": task, "live": task.state not in FINAL_STATES, "progress": ui.history.progress(run.id, task.name),
        "every": EVERY,
    })


def branches(request: Request) -> Response:
    ui = request.app.state.ui
    run, workflow = _run(request)
    step = request.query_params.get("step", "")
    if step not in workflow.steps:
        raise HTTPException(404, f"run {run.id} has no step {step!r}")
    state = request.query_params.get("state", "")
    offset = max(int(request.query_params.get("offset", "0") or 0), 0)
    tasks = ui.history.tasks(run.id, step=step, states=[state] if state else (), limit=BRANCH_PAGE + 1,
                             offset=offset)
    counts = ui.history.step_counts(run.id).get(step, {})
    return ui.templates.TemplateResponse(request, "_branches.html", {
        "run": run, "step": step, "tasks": tasks[:BRANCH_PAGE], "more": len(tasks) > BRANCH_PAGE,
        "offset": offset, "state": state, "counts": counts, "page": BRANCH_PAGE,
    })


def timeline(request: Request) -> Response:
    """Every attempt of the run, compactly: lanes are workers."""
    ui = request.app.state.ui
    run, workflow = _run(request)
    reused = [[t.name, t.ended] for t in ui.history.task_states(run.id, cached=True) if t.ended]
    return JSONResponse({
        "started": run.started, "ended": run.ended, "now": time.time(), "live": run.live,
        "attempts": ui.history.attempt_spans(run.id), "reused": reused,
        "services": [name for name, step in workflow.steps.items() if step.kind == "service"],
    })


def log_text(request: Request) -> Response:
    """A piece of an attempt's stdout or stderr from ``offset`` on, and whether more may come."""
    ui = request.app.state.ui
    run, _ = _run(request)
    q = request.query_params
    try:
        attempt, offset = int(q.get("attempt", "1")), max(int(q.get("offset", "0")), 0)
        path = ui.history.log_path(run, q.get("task", ""), attempt, q.get("stream", "out"))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    task = ui.history.task(run.id, q.get("task", ""))
    if task is None:
        raise HTTPException(404, "no such task")
    text, end = "", offset
    if path.is_file():
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(LOG_CHUNK)
        cut = len(data) if task.state in FINAL_STATES and len(data) < LOG_CHUNK else _whole(data)
        text, end = data[:cut].decode("utf-8", errors="replace"), offset + cut
    growing = (task.state not in FINAL_STATES and task.attempts == attempt) or (
        path.is_file() and end < path.stat().st_size)
    return JSONResponse({"text": text, "offset": end, "more": growing, "every": EVERY})


def _whole(data: bytes) -> int:
    """How many bytes of ``data`` hold whole UTF-8 characters: a character cut at the end
    waits for the next piece."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the start of the last character
            length = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if length <= back else len(data) - back
    return len(data)


def stored_file(request: Request) -> Response:
    ui = request.app.state.ui
    run, _ = _run(request)
    file = _find_file(request, run)
    headers = {"content-security-policy": STORED_POLICY, "cache-control": "private, max-age=3600"}
    disposition = "attachment" if request.query_params.get("download") else "inline"
    return FileResponse(ui.artifacts.path(file.digest, file.suffix), media_type=media_type(file),
                        filename=file.download_name, content_disposition_type=disposition, headers=headers)


def array_image(request: Request) -> Response:
    ui = request.app.state.ui
    run, _ = _run(request)
    file = _find_file(request, run)
    if file.kind != "array":
        raise HTTPException(404, "not an array")
    return Response(ui.artifacts.array_image(file), media_type="image/png",
                    headers={"cache-control": "private, max-age=3600"})


def _find_file(request: Request, run: RunSummary) -> FileView:
    ui = request.app.state.ui
    task = ui.history.task(run.id, request.query_params.get("task", ""))
    file = None
    if task is not None and task.manifest is not None:
        file = ui.artifacts.find(task.name, task.manifest, request.path_params["digest"])
    if file is None:
        raise HTTPException(404, "no such file in this task's output")
    return file


routes = [
    Route("/runs/{run_id}", run_page),
    Route("/runs/{run_id}/stream", run_stream),
    Route("/runs/{run_id}/task", task_panel),
    Route("/runs/{run_id}/progress", task_progress),
    Route("/runs/{run_id}/branches", branches),
    Route("/runs/{run_id}/timeline.json", timeline),
    Route("/runs/{run_id}/log", log_text),
    Route("/runs/{run_id}/file/{digest}", stored_file),
    Route("/runs/{run_id}/array/{digest}", array_image),
]
