"""Live updates pushed to a page as Server-Sent Events: a feed reads the run store every
half second (in a worker thread, never on the event loop) and sends only what changed since
its last message; the browser's EventSource reconnects by itself if the connection drops.

- ``RunFeed``: one run's status, its steps' statuses, the tasks and attempts that changed.
- ``RunsFeed``: the rows of the runs list that changed (new runs, runs that moved on)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse

from fanflow.history import History, RunSummary, TaskState
from fanflow.spec.model import Workflow
from fanflow.ui import graph

EVERY = 0.5  # seconds between reads of the store while a run is live
IDLE_EVERY = 2.0  # while nothing is live (a finished run whose services still serve)
SLACK = 5.0  # seconds: events are timed by the engine a little before they are committed
PING_EVERY = 15.0


def stream(request: Request, poll: Callable[[], dict | None], finished: Callable[[], bool],
           every: Callable[[], float]) -> StreamingResponse:
    """An event stream of what ``poll`` returns, until ``finished``, the page goes, or the
    UI stops (``UI.stopping``)."""
    stopping = request.app.state.ui.stopping

    async def events():
        yield "retry: 2000\n\n"
        quiet = 0.0
        while not stopping.is_set():
            message = await run_in_threadpool(poll)
            if message:
                yield f"data: {json.dumps(message, separators=(',', ':'))}\n\n"
                quiet = 0.0
            elif quiet >= PING_EVERY:
                yield ": ping\n\n"
                quiet = 0.0
            if finished():
                break
            await asyncio.sleep(every())
            quiet += every()
        yield "event: end\ndata: {}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


class RunFeed:
    """What changed in one run since the page was made (``since``, when the run had
    ``created`` tasks), then since the last message. Each read is cheap on a run of 10,000
    tasks: only the tasks that may have changed are read (``History.task_states``), and the
    steps' counts are counted by the database."""

    def __init__(self, history: History, run_id: str, workflow: Workflow, since: float, created: int):
        self.history = history
        self.run_id = run_id
        self.workflow = workflow
        self.tasks: dict[str, TaskState] = {}
        self.since = since - SLACK
        self.created = created
        self.counts: dict[str, int] | None = None
        self.steps: dict | None = None
        self.run: dict | None = None
        self.done = False
        self.live = True

    def poll(self) -> dict | None:
        now = time.time()
        summary = self.history.summary(self.run_id, counts=False)
        fresh = self.history.task_states(self.run_id, since=self.since, created=self.created)
        changed = [s for s in fresh if self.tasks.get(s.name) != s]
        for state in changed:
            self.tasks[state.name] = state
        message: dict = {}
        if changed or self.steps is None:
            counts = self.history.step_counts(self.run_id)
            self.created = sum(sum(c.values()) for c in counts.values())
            self.counts = {}
            for step in counts.values():
                for state, count in step.items():
                    self.counts[state] = self.counts.get(state, 0) + count
            urls = service_urls(self.history, self.run_id, self.workflow)
            steps = {name: status.as_json() for name, status in graph.statuses(self.workflow, counts, urls).items()}
            if steps != self.steps:
                self.steps = message["steps"] = steps
        run = {"state": summary.state, "ended": summary.ended, "error": summary.error, "counts": self.counts,
               "duration": (summary.ended or now) - summary.started}
        if run != self.run or changed:
            self.run = message["run"] = run
        if changed:
            message["tasks"] = [list(s) for s in changed]
            message["attempts"] = [list(a) for a in self.history.attempt_spans(self.run_id, self.since)]
        self.since = now - SLACK
        self.live = summary.live or bool(self.counts.get("serving"))
        if not self.live:
            self.done = True  # this message holds the end state; the next poll would be empty
        return message or None

    def every(self) -> float:
        return EVERY if self.live else IDLE_EVERY


def service_urls(history: History, run_id: str, workflow: Workflow) -> dict[str, list[str]]:
    """The URLs of the services of a run that serve now, by step."""
    urls: dict[str, list[str]] = {}
    for name, step in workflow.steps.items():
        if step.kind == "service":
            for task in history.tasks(run_id, step=name, states=["serving"]):
                if isinstance(task.manifest, dict) and isinstance(task.manifest.get("url"), str):
                    urls.setdefault(name, []).append(task.manifest["url"])
    return urls


class RunsFeed:
    """The runs of a filtered list that changed since the last message, as rendered rows."""

    def __init__(self, history: History, render_row: Callable[[RunSummary], str], filters: dict):
        self.history = history
        self.render_row = render_row
        self.filters = filters
        self.seen: dict[str, tuple] = {}
        self.since = time.time()

    def poll(self) -> dict | None:
        now = time.time()
        changed = self.history.changed_since(self.since - SLACK)
        self.since = now
        fresh = [r for r in changed if self.seen.get(r.id) != _fingerprint(r)]
        if not fresh:
            return None
        shown = self.history.find(ids=[r.id for r in fresh], limit=len(fresh), **self.filters)
        for row in fresh:
            self.seen[row.id] = _fingerprint(row)
        if not shown:
            return None
        return {"rows": [{"id": row.id, "html": self.render_row(row)} for row in shown]}

    @staticmethod
    def finished() -> bool:
        return False

    @staticmethod
    def every() -> float:
        return 1.0


def _fingerprint(row: RunSummary) -> tuple:
    return row.state, row.ended, tuple(sorted(row.counts.items()))
