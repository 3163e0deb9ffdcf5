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
    """An event stream of what ``poll`` returns, until ``finished`` or the page goes."""

    async def events():
        yield "retry: 2000\n\n"
        quiet = 0.0
        while True:
            message = await run_in_threadpool(poll)
            if message:
                yield f"data: {json.dumps(message, separators=(',', ':'))}\n\n"
                quiet = 0.0
            elif quiet >= PING_EVERY:
                yield ": ping\n\n"
                quiet = 0.0
            if finished():
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(every())
            quiet += every()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


class RunFeed:
    """What changed in one run since the last message (everything, the first time)."""

    def __init__(self, history: History, run_id: str, workflow: Workflow):
        self.history = history
        self.run_id = run_id
        self.workflow = workflow
        self.services = {name for name, step in workflow.steps.items() if step.kind == "service"}
        self.tasks: dict[str, TaskState] = {}
        self.steps: dict | None = None
        self.run: dict | None = None
        self.read_at: float | None = None
        self.done = False
        self.live = True

    def poll(self) -> dict | None:
        summary = self.history.summary(self.run_id)
        now = time.time()
        states = self.history.task_states(self.run_id)
        changed = [s for s in states if self.tasks.get(s.name) != s]
        for state in changed:
            self.tasks[state.name] = state
        message: dict = {}
        run = {"state": summary.state, "ended": summary.ended, "error": summary.error,
               "counts": summary.counts, "duration": (summary.ended or now) - summary.started}
        if run != self.run or changed:
            self.run = run
            message["run"] = run
        if changed or self.steps is None:
            steps = self._steps(states, changed)
            if steps != self.steps:
                self.steps = steps
                message["steps"] = steps
        if changed:
            message["tasks"] = [list(s) for s in changed]
            since = None if self.read_at is None else self.read_at - SLACK
            message["attempts"] = [[a.task, a.number, a.worker, a.started, a.ended, a.state]
                                   for a in self.history.attempts(self.run_id, since=since)]
        self.read_at = now
        serving = any(s.state == "serving" for s in self.tasks.values())
        self.live = summary.live or serving
        if not self.live:
            self.done = True  # this message holds the end state; the next poll would be empty
        return message or None

    def _steps(self, states: list[TaskState], changed: list[TaskState]) -> dict:
        counts: dict[str, dict[str, int]] = {}
        for s in states:
            step = counts.setdefault(s.step, {})
            step[s.state] = step.get(s.state, 0) + 1
        urls: dict[str, list[str]] = {}
        for name in self.services:
            for task in self.history.tasks(self.run_id, step=name, states=["serving"]):
                if isinstance(task.manifest, dict) and isinstance(task.manifest.get("url"), str):
                    urls.setdefault(name, []).append(task.manifest["url"])
        return {name: status.as_json() for name, status in graph.statuses(self.workflow, counts, urls).items()}

    def every(self) -> float:
        return EVERY if self.live else IDLE_EVERY


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
