"""Starting runs from the browser: a form generated from a workflow's typed parameters
(defaults, descriptions, choices), checked by the same code as ``fanflow run -p`` and
started in the background; and the cancel and resume buttons of a run.

Only workflows the project knows are offered (installed ones, those given to ``fanflow ui
--workflow``, and those its runs came from), so a page cannot make the UI load any file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from fanflow import background
from fanflow.errors import RunNotFound
from fanflow.spec.errors import SpecError
from fanflow.spec.loader import load_workflow
from fanflow.spec.model import Param, Workflow
from fanflow.spec.registry import installed


@dataclass
class Offered:
    """A workflow the launch page offers."""

    name: str
    path: Path
    origin: str  # installed, given, ran


@dataclass
class Field:
    """One parameter as a form field."""

    name: str
    param: Param
    text: str  # what the field holds
    error: str | None = None

    @property
    def widget(self) -> str:
        if self.param.type == "bool":
            return "checkbox"
        if self.param.choices:
            return "select"
        return "textarea" if self.param.type in ("list", "dict") and len(self.text) > 40 else "text"

    @property
    def checked(self) -> bool:
        return self.text.strip().lower() in ("true", "yes", "on", "1")

    @property
    def choices(self) -> list[str]:
        return [as_text(choice) for choice in self.param.choices or []]


@dataclass
class Form:
    offered: Offered
    workflow: Workflow
    fields: list[Field]
    errors: list[str] = field(default_factory=list)  # problems not tied to one parameter


def as_text(value) -> str:
    """A parameter's value as the command line would take it (-p name=TEXT)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value)


def offered(ui) -> list[Offered]:
    found: dict[Path, Offered] = {}
    for name, entry in installed().items():
        try:
            found.setdefault(entry.path().resolve(), Offered(name, entry.path().resolve(), "installed"))
        except Exception:
            continue
    for path in ui.workflows:
        resolved = Path(path).resolve()
        if resolved.is_file() and resolved not in found:
            try:
                name = load_workflow(resolved).name
            except SpecError:
                name = resolved.stem  # its errors show when it is chosen
            found[resolved] = Offered(name, resolved, "given")
    for name, source in ui.history.workflows():
        path = Path(source).resolve()
        if path.is_file():
            found.setdefault(path, Offered(name, path, "ran"))
    return list(found.values())


def _find(ui, target: str) -> Offered:
    for choice in offered(ui):
        if target in (str(choice.path), choice.name):
            return choice
    raise HTTPException(404, f"no workflow {target!r} is offered here")


def _form(offer: Offered, values: dict[str, str] | None = None) -> Form:
    workflow = load_workflow(offer.path)
    fields = [Field(name, param, (values or {}).get(name, as_text(param.default)))
              for name, param in workflow.params.items()]
    return Form(offer, workflow, fields)


def launch_page(request: Request) -> Response:
    ui = request.app.state.ui
    target = request.query_params.get("workflow")
    values = None
    source_run = request.query_params.get("from")
    if source_run:
        try:
            run = ui.history.summary(source_run)
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        if not run.source:
            raise HTTPException(404, f"run {run.id} did not come from a workflow file")
        target, values = str(Path(run.source).resolve()), {k: as_text(v) for k, v in run.params.items()}
    if not target:
        return ui.templates.TemplateResponse(request, "launch.html", {"offered": offered(ui), "form": None})
    try:
        form = _form(_find(ui, target), values)
    except SpecError as exc:
        return ui.templates.TemplateResponse(request, "launch.html", {
            "offered": offered(ui), "form": None, "load_errors": [str(i) for i in exc.issues]}, status_code=400)
    return ui.templates.TemplateResponse(request, "launch.html", {"offered": offered(ui), "form": form})


async def launch_start(request: Request) -> Response:
    ui = request.app.state.ui
    data = await request.form()
    offer = _find(ui, str(data.get("workflow", "")))
    return await _start(request, offer, {k.removeprefix("p."): str(v) for k, v in data.items() if k.startswith("p.")})


async def _start(request: Request, offer: Offered, texts: dict[str, str]) -> Response:
    from starlette.concurrency import run_in_threadpool

    ui = request.app.state.ui
    form = await run_in_threadpool(_form, offer, texts)
    for item in form.fields:
        if item.param.type == "bool":  # an unticked box sends nothing
            item.text = texts[item.name] = "true" if texts.get(item.name) else "false"
    try:
        launched = await run_in_threadpool(lambda: background.start(offer.path, params=texts, home=ui.project.home))
    except SpecError as exc:
        by_name = {f.name: f for f in form.fields}
        for issue in exc.issues:
            name = (issue.field or "").removeprefix("params.")
            if name in by_name:
                by_name[name].error = issue.message
            else:
                form.errors.append(str(issue))
        return ui.templates.TemplateResponse(request, "launch.html", {"offered": offered(ui), "form": form},
                                             status_code=400)
    except background.LaunchError as exc:
        form.errors.append(str(exc))
        return ui.templates.TemplateResponse(request, "launch.html", {"offered": offered(ui), "form": form},
                                             status_code=500)
    ui.launched[launched.run_id] = launched
    return RedirectResponse(f"/runs/{quote(launched.run_id)}", status_code=303)


async def cancel(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    ui = request.app.state.ui
    run_id = request.path_params["run_id"]
    try:
        await run_in_threadpool(background.cancel, run_id, home=ui.project.home)
    except (SpecError, RunNotFound) as exc:
        return _problem(request, str(exc), run_id)
    return RedirectResponse(f"/runs/{quote(run_id)}", status_code=303)


async def resume(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    ui = request.app.state.ui
    run_id = request.path_params["run_id"]
    try:
        launched = await run_in_threadpool(lambda: background.start(resume=run_id, home=ui.project.home))
    except (SpecError, RunNotFound, background.LaunchError) as exc:
        return _problem(request, str(exc), run_id)
    ui.launched[launched.run_id] = launched
    return RedirectResponse(f"/runs/{quote(launched.run_id)}", status_code=303)


def _problem(request: Request, message: str, run_id: str) -> Response:
    ui = request.app.state.ui
    return ui.templates.TemplateResponse(request, "problem.html", {"message": message, "back": f"/runs/{quote(run_id)}"},
                                         status_code=409)


routes = [
    Route("/launch", launch_page),
    Route("/launch", launch_start, methods=["POST"]),
    Route("/runs/{run_id}/cancel", cancel, methods=["POST"]),
    Route("/runs/{run_id}/resume", resume, methods=["POST"]),
]
