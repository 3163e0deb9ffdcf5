"""The run loop: drives the pure scheduling core with an executor, looks up the cache, records
every state change before acting on it, enforces timeouts, restarts services that die, and
cancels cleanly on Ctrl-C or SIGTERM.

One round of the loop: take the tasks that became ready and ask the memo about them in one
batch (reused ones succeed at once), take the tasks the core admits, record what changed,
hand the admitted tasks to the executor in one batch, then apply the results that came back.
Running tasks' progress reports are kept in ``progress`` (the live view reads it) and written
to the run store now and then (see ``engine.progress``).
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import os
import re
import secrets
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fanflow.engine.core import Scheduler, Task, TaskTable
from fanflow.engine.naming import file_name
from fanflow.engine.plan import Plan
from fanflow.engine.progress import ProgressBook
from fanflow.executors.base import Executor, TaskResult, TaskSpec
from fanflow.spec.model import Workflow
from fanflow.spec.subflows import OUTPUTS_FUNCTION
from fanflow.vocab.manifest import artifact_digests
from fanflow.vocab.progress import Progress
from fanflow.vocab.states import OK, Event, State

__all__ = ["Memo", "Recorder", "RunInfo", "RunResult", "Runner", "default_home", "file_name", "new_run_id"]


class Recorder(Protocol):
    """Where a run's history goes. ``record`` must make the events durable before it returns."""

    def begin(self, run: RunInfo) -> None: ...

    def record(self, run_id: str, events: list[Event]) -> None: ...

    def finish(self, run_id: str, state: str, error: str | None, ended: float) -> None: ...

    def record_progress(self, run_id: str, progress: list[tuple[str, Progress]]) -> None:
        """Keep the latest progress of these tasks (each replaces what a task had)."""


class Memo(Protocol):
    """Earlier results a task may reuse: the cache, and the run being resumed. Each task's key
    is computed once, when it becomes ready; outputs to reuse later are saved by the recorder,
    from the ``cache_key`` of succeeded events."""

    @property
    def active(self) -> bool:
        """Whether a lookup can find anything at all."""

    def key(self, spec: TaskSpec) -> str: ...

    def lookup(self, wanted: list[tuple[TaskSpec, str]]) -> dict[str, Any]:
        """Outputs to reuse for the tasks of ``wanted`` (spec, key), by task name."""

    def rerun_reason(self, task: str) -> str | None: ...


@dataclass
class RunInfo:
    run_id: str
    workflow: Workflow
    params: dict[str, Any]
    started: float
    executor: str
    home: str
    resumed_from: str | None = None


@dataclass
class RunResult:
    run_id: str
    state: str  # succeeded / failed / cancelled
    error: str | None
    tasks: TaskTable
    started: float
    ended: float
    services: dict[str, Any] = field(default_factory=dict)  # task -> endpoint, when kept up

    @property
    def duration(self) -> float:
        return self.ended - self.started

    def outputs(self, step: str) -> list[Any]:
        return [t.output for t in self.tasks.of_step(step) if t.state in OK]


class NullRecorder:
    def begin(self, run: RunInfo) -> None:
        pass

    def record(self, run_id: str, events: list[Event]) -> None:
        pass

    def finish(self, run_id: str, state: str, error: str | None, ended: float) -> None:
        pass

    def record_progress(self, run_id: str, progress: list[tuple[str, Progress]]) -> None:
        pass


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class Runner:
    def __init__(
        self,
        workflow: Workflow,
        executor: Executor,
        *,
        params: dict[str, Any] | None = None,
        home: str | Path = ".fanflow",
        artifacts: str | None = None,
        recorder: Recorder | None = None,
        memo: Memo | None = None,
        run_id: str | None = None,
        listeners: list[Callable[[list[Event]], None]] | None = None,
        keep_services: bool = False,
        resumed_from: str | None = None,
    ):
        self.plan = Plan.build(workflow, params)
        self.workflow = workflow
        self.executor = executor
        self.home = Path(home).resolve()
        self.artifacts = artifacts or str(self.home / "artifacts")
        self.recorder = recorder or NullRecorder()
        self.memo = memo
        self.run_id = run_id or new_run_id()
        self.listeners = listeners or []
        self.keep_services = keep_services
        self.resumed_from = resumed_from
        self.core = Scheduler(self.plan, executor.capacity())
        self.log_dir = self.home / "logs" / self.run_id
        self.scratch_dir = self.home / "tmp" / self.run_id
        self._log_root, self._scratch_root = str(self.log_dir), str(self.scratch_dir)
        self.import_paths = list(workflow.import_paths) or (
            [str(Path(workflow.source).resolve().parent)] if workflow.source else []
        )
        self.light = LightSteps(self.plan, self.core.window)
        self._specs: dict[str, TaskSpec] = {}  # handed out and not started: their first attempt's spec
        self._running: dict[str, TaskSpec] = {}  # submitted, by task
        self._keys: dict[str, str] = {}  # cache keys of tasks handed out and not ended
        self._deadlines: dict[str, tuple[float, str]] = {}  # timeouts of running tasks
        self._deadline_heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._ports: dict[str, int] = {}
        self._services: set[str] = set()  # service tasks started
        self._stop_requested: str | None = None
        self.progress = ProgressBook()  # running tasks' latest progress
        self.started = 0.0

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> RunResult:
        self.started = time.time()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        error = self._check_capacity()
        if error is None:
            self.executor.start()  # workers start while the run is being recorded
        self.recorder.begin(
            RunInfo(
                self.run_id,
                self.workflow,
                self.plan.params,
                self.started,
                self.executor.name,
                str(self.home),
                self.resumed_from,
            )
        )
        with self._signals(), _fewer_collections:
            try:
                if error is None:
                    self.core.start(time.time())
                    self._loop()
            finally:
                if not (self.keep_services and self.core.outcome == "succeeded"):
                    self._stop_services()
                    self.executor.close()
        self._record_progress(everything=True)
        state = "failed" if error else self.core.outcome
        error = error or self._error()
        ended = time.time()
        self.recorder.finish(self.run_id, state, error, ended)
        self._specs.clear()
        self._keys.clear()
        services = {name: self.core.task(name).output for name in self._services
                    if self.core.state(name) is State.SERVING}
        return RunResult(self.run_id, state, error, self.core.tasks, self.started, ended, services)

    def _loop(self) -> None:
        core = self.core
        while True:
            if self._stop_requested and not core.cancelled_by_user:
                core.cancel(time.time(), self._stop_requested)
            for name in core.stops():
                self.executor.stop(name, "cancelled", core.aborted or "cancelled")
            if core.done:
                self._flush()
                return
            now = time.time()
            reused = self._offer(now)
            specs = []
            for task in core.admit(now, self.light.shares):
                if self.plan.steps[task.step].step.uses == OUTPUTS_FUNCTION:
                    # A sub-workflow's outputs: references passed through, nothing to run.
                    core.succeeded(task.name, task.inputs["outputs"], now)
                else:
                    specs.append(self._spec_for(task))
            self._flush()  # every change so far is on record before the executor is asked
            self._record_progress()
            for spec in specs:
                self.executor.submit(spec)
                self._running[spec.task] = spec
                if spec.kind == "service":
                    self._services.add(spec.task)
                self._set_deadline(spec, now)
            self.executor.flush()
            results = self._collect(0 if reused or specs else self._wait_time())
            self._take_reports()  # each arrived before its task's result
            for result in results:
                self._apply(result)
            self._expire()

    def _offer(self, now: float) -> bool:
        """Ask the memo, in one batch, about the tasks that became ready; those it knows
        succeed at once. Says whether any did (more may then be ready)."""
        offered = self.core.ready(now)
        memo = self.memo
        if not offered or memo is None:
            return False
        wanted = []
        for task in offered:
            step = self.plan.steps[task.step]
            if step.service or step.step.uses == OUTPUTS_FUNCTION:
                continue
            spec = self._specs[task.name] = self._spec(task, 1)
            key = self._keys[task.name] = memo.key(spec)
            wanted.append((spec, key))
        if not wanted or not memo.active:
            return False
        found = memo.lookup(wanted)
        for name, output in found.items():
            del self._specs[name]
            self.core.reused(name, output, now, cache_key=self._keys.pop(name))
        return bool(found)

    def _collect(self, timeout: float | None) -> list[TaskResult]:
        results = self.executor.wait(timeout)
        if results and self.light.steps:
            # Tiny tasks finish in a stream, and the workers have plenty queued: gather more
            # (for at most a few ms) so that one round (one transaction) takes them all.
            deadline = time.perf_counter() + self.light.GATHER
            while len(results) < 1024 and (left := deadline - time.perf_counter()) > 0:
                results += self.executor.wait(left)
        return results

    def _wait_time(self) -> float | None:
        if self.core.done:
            return 0
        wakeups = [self._deadline_heap[0][0]] if self._deadline_heap else []
        retry = self.core.next_wakeup()
        if retry is not None:
            wakeups.append(retry)
        timeout = 0.5  # also how often a Ctrl-C is noticed while tasks run
        if wakeups:
            timeout = min(timeout, max(0.0, min(wakeups) - time.time()))
        return timeout

    def _set_deadline(self, spec: TaskSpec, now: float) -> None:
        step = self.plan.steps[spec.step].step
        if step.kind == "service":
            deadline = (now + step.ready_timeout, f"not ready after {step.ready_timeout:g}s")
        elif step.timeout:
            deadline = (now + step.timeout, f"timed out after {step.timeout:g}s")
        else:
            return
        self._deadlines[spec.task] = deadline
        heapq.heappush(self._deadline_heap, (deadline[0], next(self._seq), spec.task))

    def _expire(self) -> None:
        now = time.time()
        heap = self._deadline_heap
        while heap and heap[0][0] <= now:
            at, _, name = heapq.heappop(heap)
            deadline = self._deadlines.get(name)
            if deadline is not None and deadline[0] == at:
                del self._deadlines[name]
                self.executor.stop(name, "timeout", deadline[1])

    def _take_reports(self) -> None:
        reports = self.executor.reports()
        if not reports:
            return
        core = self.core
        for name, attempt, report in reports:
            with contextlib.suppress(ValueError):
                if core.state(name) is State.RUNNING and core.attempt(name) == attempt:
                    self.progress.report(name, attempt, report)

    def _record_progress(self, *, everything: bool = False) -> None:
        due = self.progress.due(time.time(), everything=everything)
        if due:
            self.recorder.record_progress(self.run_id, due)

    def _apply(self, result: TaskResult) -> None:
        core, now, name = self.core, time.time(), result.task
        try:
            state, attempt = core.state(name), core.attempt(name)
        except ValueError:
            return
        if result.attempt != attempt or state not in (State.RUNNING, State.SERVING):
            return  # a late answer from an attempt already given up on
        detail = {"worker": result.worker, "started": result.started}
        if result.status != "serving":
            self._deadlines.pop(name, None)
            if result.report is not None:
                self.progress.report(name, attempt, result.report)
            self.progress.ended(name)
        if result.status == "succeeded":
            if state is not State.RUNNING:
                return
            spec = self._running.pop(name, None)
            self.light.observe(spec.step if spec else core.task(name).step, result)
            extra = {"inputs": artifact_digests(spec.inputs) if spec else []}
            key = self._keys.pop(name, None)
            if key is not None:
                extra["cache_key"] = key
                if why := self.memo.rerun_reason(name):
                    extra["reason"] = why
            core.succeeded(name, result.output, now, **extra, **detail)
        elif result.status == "serving":
            self._deadlines.pop(name, None)
            port = _port_of(result.output)
            if port:
                self._ports[name] = port
            if state is State.RUNNING:
                core.serving(name, result.output, now)
        elif result.status == "exited" and state is State.SERVING:
            self._restart_service(name, result.error or "the service exited")
        elif result.status == "cancelled":
            self._running.pop(name, None)
            self._keys.pop(name, None)
            if state is State.SERVING:
                core.service_stopped(name, now)
            else:
                core.cancelled(name, now, result.error or "cancelled")
        elif state is State.RUNNING:
            self._running.pop(name, None)
            kind = {"timeout": "timeout", "crashed": "crashed", "exited": "exited"}.get(
                result.status, "error"
            )
            core.failed(
                name,
                result.error or result.status,
                now,
                retryable=result.retryable,
                exit_reason=kind,
                traceback=result.traceback,
                **detail,
            )
            if core.state(name) is not State.RETRYING:
                self._keys.pop(name, None)

    def _restart_service(self, name: str, error: str) -> None:
        task = self.core.restarted(name, time.time(), error)
        if task is None:
            return
        spec = self._spec(task, task.attempt)
        spec.service_port = self._ports.get(name, 0)
        self.executor.submit(spec)

    # -- helpers ------------------------------------------------------------------------
    def _spec_for(self, task: Task) -> TaskSpec:
        """The spec of an admitted task: the one made when it was handed out, for a first
        attempt; a new one for a retry."""
        spec = self._specs.pop(task.name, None)
        if spec is None or task.attempt != 1:
            spec = self._spec(task, task.attempt)
        if task.step in self.light.steps:
            spec.light = True
        return spec

    def _spec(self, task: Task, attempt: int) -> TaskSpec:
        step = self.plan.steps[task.step]
        res = step.resources
        base = file_name(task.name)
        return TaskSpec(
            run_id=self.run_id,
            task=task.name,
            step=task.step,
            attempt=attempt,
            uses=step.step.uses,
            inputs=task.inputs or {},
            artifacts=self.artifacts,
            cpus=res.cpus,
            gpus=res.gpus,
            memory=res.memory,
            kind=step.step.kind,
            executor=step.step.executor,
            log_prefix=f"{self._log_root}/{base}.{attempt}",
            scratch=f"{self._scratch_root}/{base}.{attempt}",
            light=task.step in self.light.steps,
            import_paths=self.import_paths,
        )

    def _flush(self) -> None:
        events = self.core.events()
        if not events:
            return
        self.recorder.record(self.run_id, events)
        for listener in self.listeners:
            listener(events)

    def _check_capacity(self) -> str | None:
        capacity = self.executor.capacity()
        for name, step in self.plan.steps.items():
            res = step.resources
            for key, need in (("cpus", res.cpus), ("gpus", res.gpus), ("memory", res.memory or 0)):
                if need > capacity[key]:
                    have = capacity[key]
                    return (
                        f"step {name} asks for {need:g} {key}; the {self.executor.name} executor has "
                        f"{have:g}" + (" (set resources lower)" if key != "gpus" else "")
                    )
        return None

    def _error(self) -> str | None:
        if self.core.cancelled_by_user:
            return self.core.aborted
        failures = self.core.failures
        if not failures:
            return None
        first = failures[0]
        more = len(failures) - 1
        return f"{first.name}: {first.error}" + (f" (and {more} more)" if more else "")

    def _serving(self) -> list[str]:
        return [name for name in self._services if self.core.state(name) is State.SERVING]

    def _stop_services(self) -> None:
        for name in self._serving():
            self.executor.stop(name, "cancelled", "the run ended")
        deadline = time.time() + 10
        while self._serving() and time.time() < deadline:
            for result in self.executor.wait(0.1):
                self._apply(result)
        self._flush()

    def stop_services(self) -> None:
        """Stop services kept up after the run (``keep_services``) and release the executor."""
        self._stop_services()
        self.executor.close()

    def supervise(self, until: threading.Event, poll: float = 0.2) -> None:
        """Keep services up after the run, restarting any that die, until ``until`` is set."""
        while not until.is_set():
            for result in self.executor.wait(poll):
                self._apply(result)
            self._flush()

    def request_stop(self, reason: str = "cancelled") -> None:
        self._stop_requested = reason

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, _frame):
            self._stop_requested = f"cancelled by {signal.Signals(signum).name}"

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class LightSteps:
    """Steps whose tasks have proven tiny (most finish within a few milliseconds), which the
    core then keeps more of in flight: enough, by their measured duration, for each core to
    have about ``QUEUED`` seconds of them queued, so that a worker never waits for the engine.
    Steps with a timeout, services and thread steps never qualify: a queued task must not
    wait behind a task that might be killed."""

    SAMPLES = 8
    FAST = 0.01  # seconds
    QUEUED = 0.05  # seconds of tiny tasks queued per core
    GATHER = 0.005  # seconds the run loop may wait for more results of tiny tasks
    MIN_SHARE = 16

    def __init__(self, plan: Plan, window: int):
        self.plan = plan
        self.steps: frozenset[str] = frozenset()
        self.shares: dict[str, int] = {}  # light step -> tasks admitted per core
        self._max_share = max(self.MIN_SHARE, window // 2)
        self._seen: dict[str, deque[float]] = {}  # step -> how long its latest tasks took

    def observe(self, step: str, result: TaskResult) -> None:
        if step in self.steps or result.started is None or result.ended is None:
            return
        spec = self.plan.steps[step].step
        if spec.timeout or spec.kind != "task" or spec.executor != "process" or not spec.fan_out:
            return
        seen = self._seen.get(step)
        if seen is None:
            seen = self._seen[step] = deque(maxlen=self.SAMPLES)
        seen.append(max(result.ended - result.started, 0.0))
        if len(seen) == self.SAMPLES and sum(took < self.FAST for took in seen) >= 0.9 * self.SAMPLES:
            # The median: a worker's first task of a step also imports the step's module.
            typical = max(statistics.median(seen), 1e-6)
            self.shares[step] = max(self.MIN_SHARE, min(self._max_share, int(self.QUEUED / typical)))
            self.steps = self.steps | {step}


class _FewerCollections:
    """A run makes objects that live as long as it does (a record per task, its events until
    they are written): Python's cyclic garbage collector would scan them, and everything the
    process imported before, again and again (a tenth of the engine's time for 10,000 tiny
    tasks). While runs last, what existed before the first is set aside (``gc.freeze``) and
    the youngest generation is collected less often; both are undone when the last one ends.
    A process that froze objects itself keeps them frozen, and nothing more is frozen."""

    YOUNGEST = 20_000  # allocations between two collections of the youngest generation

    def __init__(self):
        self._lock = threading.Lock()
        self._runs = 0
        self._thresholds = gc.get_threshold()
        self._froze = False

    def __enter__(self) -> None:
        with self._lock:
            self._runs += 1
            if self._runs == 1:
                self._thresholds = gc.get_threshold()
                self._froze = gc.get_freeze_count() == 0
                if self._froze:
                    gc.freeze()
                gc.set_threshold(max(self._thresholds[0], self.YOUNGEST), *self._thresholds[1:])

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._runs -= 1
            if self._runs == 0:
                gc.set_threshold(*self._thresholds)
                if self._froze:
                    gc.unfreeze()


_fewer_collections = _FewerCollections()


def _port_of(endpoint: Any) -> int | None:
    if isinstance(endpoint, dict) and isinstance(endpoint.get("url"), str):
        match = re.search(r":(\d+)(?:/|$)", endpoint["url"])
        if match:
            return int(match.group(1))
    return None


def default_home() -> Path:
    return Path(os.environ.get("FANFLOW_HOME", ".fanflow"))
