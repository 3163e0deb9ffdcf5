"""The runs list: every run of the project with its workflow, state, start, duration, task
counts and parameters; filtered by workflow, state and text, sorted by any column, paged,
and kept up to date by a live stream."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fanflow.history import RUN_SORTS
from fanflow.ui.live import RunsFeed, stream

PAGE = 200
STATES = ("running", "succeeded", "failed", "cancelled", "interrupted")


@dataclass
class Filters:
    workflow: str = ""
    state: str = ""
    text: str = ""
    sort: str = "started"
    order: str = "desc"
    offset: int = 0
    limit: int = PAGE

    @classmethod
    def of(cls, request: Request) -> Filters:
        q = request.query_params
        sort = q.get("sort", "started")
        return cls(
            workflow=q.get("workflow", "").strip(),
            state=q.get("state", "") if q.get("state", "") in STATES else "",
            text=q.get("q", "").strip()[:200],
            sort=sort if sort in RUN_SORTS else "started",
            order="asc" if q.get("order") == "asc" else "desc",
            offset=max(_int(q.get("offset"), 0), 0),
            limit=min(max(_int(q.get("limit"), PAGE), 1), 5000),
        )

    def query(self) -> dict:
        """What ``History.find`` takes (paging aside)."""
        return {"workflow": self.workflow or None, "states": {self.state} if self.state else (),
                "text": self.text or None, "sort": self.sort, "descending": self.order == "desc"}

    def link(self, **changes) -> dict:
        values = {"workflow": self.workflow, "state": self.state, "q": self.text, "sort": self.sort,
                  "order": self.order, "limit": self.limit if self.limit != PAGE else ""}
        values.update(changes)
        return values

    def sort_link(self, column: str) -> dict:
        order = "asc" if self.sort == column and self.order == "desc" else "desc"
        return self.link(sort=column, order=order)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def runs_page(request: Request) -> Response:
    ui = request.app.state.ui
    filters = Filters.of(request)
    found = ui.history.find(limit=filters.limit + 1, offset=filters.offset, **filters.query())
    workflows = sorted({name for name, _ in ui.history.workflows()})
    return ui.templates.TemplateResponse(request, "runs.html", {
        "runs": found[: filters.limit], "more": len(found) > filters.limit, "filters": filters,
        "states": STATES, "workflows": workflows,
    })


def runs_stream(request: Request) -> Response:
    ui = request.app.state.ui
    feed = RunsFeed(ui.history, lambda row: ui.render("_run_row.html", run=row), Filters.of(request).query())
    return stream(request, feed.poll, feed.finished, feed.every)


routes = [
    Route("/", runs_page),
    Route("/runs", runs_page),
    Route("/runs/stream", runs_stream),
]
