"""The web UI's application: ``create_app(home)`` serves the project's run store (the same
one every command uses) with server-rendered pages, their live streams and the files runs
stored. Each page group is a module (``runs``, ``run``, ``launch``, ``compare``,
``tagging``) that lists its routes; this one wires them with the templates, the static
files and the guard (``security``)."""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fanflow.background import Launched
from fanflow.history import History
from fanflow.project import Project
from fanflow.ui.artifacts import Artifacts
from fanflow.ui.graph import STATE_ORDER
from fanflow.ui.security import Guard, new_token
from fanflow.vocab.progress import count_text, number

HERE = Path(__file__).parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class UI:
    """What every page reads: the project, its history and artifacts, the templates."""

    project: Project
    templates: Jinja2Templates
    token: str
    workflows: list[Path] = field(default_factory=list)  # offered by the launch page
    launched: dict[str, Launched] = field(default_factory=dict)  # runs started here
    serving: dict[str, Launched] = field(default_factory=dict)  # gateways brought up here, by run served
    history: History = field(init=False)
    artifacts: Artifacts = field(init=False)
    stopping: threading.Event = field(default_factory=threading.Event)  # live streams end when set

    def __post_init__(self) -> None:
        self.history = History(self.project)
        self.artifacts = Artifacts(self.project.artifacts_url)

    def render(self, name: str, **context) -> str:
        """A template rendered to text (a fragment the live streams send)."""
        return self.templates.get_template(name).render(token=self.token, **context)


def create_app(home: str | os.PathLike | None = None, *, workflows: list[str | os.PathLike] = (),
               hosts: set[str] = frozenset()) -> Starlette:
    """The UI of the project at ``home`` (found as every command finds it when None)."""
    from fanflow.ui import compare, launch, run, runs, tagging

    project = Project(home)
    token = new_token()
    ui = UI(project, _templates(token), token, [Path(w) for w in workflows])

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            tagging.stop_gateways(ui)
            project.close()

    routes = [*runs.routes, *run.routes, *launch.routes, *compare.routes, *tagging.routes,
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ui = ui
    app.add_middleware(Guard, token=token, hosts=LOCAL_HOSTS | {h.lower().strip("[]") for h in hosts})
    return app


class Served:
    """The UI served from a thread of this process. ``stop`` first ends the pages' live
    streams (they would hold the server's shutdown), then the server."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0):
        from fanflow.serving.server import ServerThread

        self.app = app
        self.thread = ServerThread(app, host, port, graceful_timeout=3).start(timeout=60)
        self.url = self.thread.url

    def stop(self) -> None:
        from fanflow.ui.live import EVERY

        self.app.state.ui.stopping.set()
        time.sleep(2 * EVERY + 0.2)
        self.thread.stop()


def _templates(token: str) -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, took=took, quote=lambda text: quote(str(text), safe=""), size=size,
                       number=number, count_text=count_text,
                       query=lambda values: urlencode({k: v for k, v in values.items() if v not in (None, "")}))
    env.globals.update(token=token, state_order=STATE_ORDER, now=time.time)
    return Jinja2Templates(env=env)


def when(seconds: float | None) -> str:
    if not seconds:
        return ""
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def took(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def size(count: int | None) -> str:
    count = count or 0
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)
