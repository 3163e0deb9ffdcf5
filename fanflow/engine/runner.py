"""The run loop: drives the pure scheduling core with an executor, records every state change
before acting on it, enforces timeouts, restarts services that die, and cancels cleanly on
Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fanflow.engine.core import Scheduler, Task
from fanflow.engine.plan import Plan
from fanflow.executors.base import Executor, TaskResult, TaskSpec
from fanflow.spec.model import Workflow
from fanflow.spec.subflows import OUTPUTS_FUNCTION
from fanflow.vocab.manifest import artifact_digests
from fanflow.vocab.states import Event, State


class Recorder(Protocol):
    """Where a run's history goes. ``record`` must make the events durable before it returns."""

    def begin(self, run: RunInfo) -> None: ...

    def record(self, run_id: str, events: list[Event]) -> None: ...

    def finish(self, run_id: str, state: str, error: str | None, ended: float) -> None: ...


class Memo(Protocol):
    """Earlier results a task may reuse: the cache, and the run being resumed. Outputs to
    reuse later are saved by the recorder, from the ``cache_key`` of succeeded events."""

    def key(self, task: Task, spec: TaskSpec) -> str: ...

    def lookup_many(self, batch: list[tuple[Task, TaskSpec]]) -> dict[str, Any]: ...


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
    tasks: dict[str, Task]
    started: float
    ended: float
    services: dict[str, Any] = field(default_factory=dict)  # task -> endpoint, when kept up

    @property
    def duration(self) -> float:
        return self.ended - self.started

    def outputs(self, step: str) -> list[Any]:
        return [
            t.output
            for t in self.tasks.values()
            if t.step == step and t.state in (State.SUCCEEDED, State.SERVING)
        ]


class NullRecorder:
    def begin(self, run: RunInfo) -> None:
        pass

    def record(self, run_id: str, events: list[Event]) -> None:
        pass

    def finish(self, run_id: str, state: str, error: str | None, ended: float) -> None:
        pass


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+-]")


def file_name(task: str) -> str:
    """A task name as a file name: train[model=cnn] -> train@model=cnn."""
    return _UNSAFE.sub("_", task.replace("[", "@").replace("]", ""))[:200]


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
        self._deadlines: dict[str, tuple[float, str]] = {}
        self._ports: dict[str, int] = {}
        self._restarts: dict[str, int] = {}
        self._stop_requested: str | None = None
        self._light = LightSteps(self.plan)
        self.started = 0.0

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> RunResult:
        self.started = time.time()
        self.log_dir.mkdir(parents=True, exist_ok=True)
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
        error = self._check_capacity()
        with self._signals():
            try:
                if error is None:
                    self.executor.start()
                    self.core.start(time.time())
                    self._loop()
            finally:
                if not (self.keep_services and self.core.outcome == "succeeded"):
                    self._stop_services()
                    self.executor.close()
        state = "failed" if error else self.core.outcome
        error = error or self._error()
        ended = time.time()
        self.recorder.finish(self.run_id, state, error, ended)
        services = {t.name: t.output for t in self.core.tasks.values() if t.state is State.SERVING}
        return RunResult(self.run_id, state, error, self.core.tasks, self.started, ended, services)

    def _loop(self) -> None:
        core = self.core
        while True:
            if self._stop_requested and not core.cancelled_by_user:
                core.cancel(time.time(), self._stop_requested)
            for name in core.drain_stop_requests():
                self.executor.stop(name, "cancelled", core.aborted or "cancelled")
            if core.done:
                self._flush()
                return
            now = time.time()
            before = len(core.events)
            reuse = self._reuse if self.memo and self.memo.active else None
            specs = []
            for task in core.next_tasks(now, reuse, self._light.steps):
                if self.plan.steps[task.step].step.uses == OUTPUTS_FUNCTION:
                    # A sub-workflow's outputs: references passed through, nothing to run.
                    core.succeeded(task.name, task.inputs["outputs"], now)
                else:
                    specs.append((task, self._spec(task)))
            reused_any = len(core.events) > before + 2 * len(specs)
            self._flush()  # every change so far is on record before the executor is asked
            for task, spec in specs:
                self.executor.submit(spec)
                step = self.plan.steps[task.step].step
                if step.kind == "service":
                    self._deadlines[task.name] = (
                        now + step.ready_timeout,
                        f"not ready after {step.ready_timeout:g}s",
                    )
                elif step.timeout:
                    self._deadlines[task.name] = (now + step.timeout, f"timed out after {step.timeout:g}s")
            self.executor.flush()
            for result in self._collect(0 if reused_any else self._wait_time(specs)):
                self._apply(result)
            self._expire()

    def _collect(self, timeout: float | None) -> list[TaskResult]:
        results = self.executor.wait(timeout)
        if results and self._light.steps:
            # Tiny tasks finish in a stream: gather a few more (for at most 1 ms) so that one
            # transaction records them all, instead of one transaction each.
            deadline = time.perf_counter() + 0.001
            while len(results) < 32 and (left := deadline - time.perf_counter()) > 0:
                results += self.executor.wait(left)
        return results

    def _wait_time(self, submitted: list) -> float | None:
        if self.core.done or submitted:
            return 0
        wakeups = [d for d, _ in self._deadlines.values()]
        retry = self.core.next_wakeup()
        if retry is not None:
            wakeups.append(retry)
        timeout = 0.5  # also how often a Ctrl-C is noticed while tasks run
        if wakeups:
            timeout = min(timeout, max(0.0, min(wakeups) - time.time()))
        return timeout

    def _expire(self) -> None:
        now = time.time()
        for name, (deadline, why) in list(self._deadlines.items()):
            if now >= deadline:
                del self._deadlines[name]
                self.executor.stop(name, "timeout", why)

    def _apply(self, result: TaskResult) -> None:
        core, now = self.core, time.time()
        task = core.tasks.get(result.task)
        if task is None or result.attempt != task.attempt:
            return  # a late answer from an attempt already given up on
        detail = {"worker": result.worker, "started": result.started}
        if result.status != "serving":
            self._deadlines.pop(task.name, None)
        if result.status == "succeeded":
            self._light.observe(task.step, result)
            extra = {"inputs": artifact_digests(task.inputs)}
            if self.memo and self.plan.steps[task.step].step.kind != "service":
                extra["cache_key"] = self.memo.keys.get(task.name) or self.memo.key(task, self._spec(task))
            core.succeeded(task.name, result.output, now, **extra, **detail)
        elif result.status == "serving":
            self._deadlines.pop(task.name, None)
            port = _port_of(result.output)
            if port:
                self._ports[task.name] = port
            if task.state is State.RUNNING:
                core.serving(task.name, result.output, now)
        elif result.status == "exited" and task.state is State.SERVING:
            self._restart_service(task, result.error or "the service exited")
        elif result.status == "cancelled":
            if task.state is State.SERVING:
                core.service_stopped(task.name, now)
            else:
                core.cancelled(task.name, now, result.error or "cancelled")
        else:
            kind = {"timeout": "timeout", "crashed": "crashed", "exited": "exited"}.get(
                result.status, "error"
            )
            core.failed(
                task.name,
                result.error or result.status,
                now,
                retryable=result.retryable,
                exit_reason=kind,
                traceback=result.traceback,
                **detail,
            )

    def _reuse(self, tasks: list[Task]) -> dict[str, tuple[Any, dict[str, Any]]]:
        batch = [
            (task, self._spec(task)) for task in tasks if self.plan.steps[task.step].step.kind != "service"
        ]
        found = self.memo.lookup_many(batch)
        return {name: (output, {"cache_key": self.memo.keys.get(name)}) for name, output in found.items()}

    def _restart_service(self, task: Task, error: str) -> None:
        step = self.plan.steps[task.step].step
        count = self._restarts.get(task.name, 0) + 1
        if count > step.restarts or self.core.aborted:
            self.core.service_stopped(
                task.name, time.time(), error=f"{error} (gave up after {step.restarts} restarts)"
            )
            return
        self._restarts[task.name] = count
        task.attempt += 1
        self.core.events.append(
            Event(
                task.name,
                task.step,
                State.SERVING,
                task.attempt,
                time.time(),
                {"restart": count, "error": error},
            )
        )
        spec = self._spec(task)
        spec.service_port = self._ports.get(task.name, 0)
        self.executor.submit(spec)

    # -- helpers ------------------------------------------------------------------------
    def _spec(self, task: Task) -> TaskSpec:
        step = self.plan.steps[task.step]
        res = step.resources
        base = file_name(task.name)
        return TaskSpec(
            run_id=self.run_id,
            task=task.name,
            step=task.step,
            attempt=task.attempt,
            uses=step.step.uses,
            inputs=task.inputs or {},
            artifacts=self.artifacts,
            cpus=res.cpus,
            gpus=res.gpus,
            memory=res.memory,
            kind=step.step.kind,
            executor=step.step.executor,
            log_prefix=f"{self._log_root}/{base}.{task.attempt}",
            scratch=f"{self._scratch_root}/{base}.{task.attempt}",
            light=task.step in self._light.steps,
            import_paths=self.import_paths,
        )

    def _flush(self) -> None:
        events = self.core.drain_events()
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
        if not self.core.failures:
            return None
        first = self.core.failures[0]
        more = len(self.core.failures) - 1
        return f"{first.name}: {first.error}" + (f" (and {more} more)" if more else "")

    def _stop_services(self) -> None:
        for task in self.core.tasks.values():
            if task.state is State.SERVING:
                self.executor.stop(task.name, "cancelled", "the run ended")
        deadline = time.time() + 10
        while any(t.state is State.SERVING for t in self.core.tasks.values()) and time.time() < deadline:
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
    core may then keep more of in flight. Steps with a timeout, services and thread steps
    never qualify: a queued task must not wait behind a task that might be killed."""

    SAMPLES = 8
    FAST = 0.01  # seconds

    def __init__(self, plan: Plan):
        self.plan = plan
        self.steps: frozenset[str] = frozenset()
        self._seen: dict[str, list[int]] = {}

    def observe(self, step: str, result: TaskResult) -> None:
        if step in self.steps or result.started is None or result.ended is None:
            return
        spec = self.plan.steps[step].step
        if spec.timeout or spec.kind != "task" or spec.executor != "process" or not spec.fan_out:
            return
        seen = self._seen.setdefault(step, [0, 0])
        seen[0] += 1
        seen[1] += (result.ended - result.started) < self.FAST
        if seen[0] >= self.SAMPLES and seen[1] >= 0.9 * seen[0]:
            self.steps = self.steps | {step}


def _port_of(endpoint: Any) -> int | None:
    if isinstance(endpoint, dict) and isinstance(endpoint.get("url"), str):
        match = re.search(r":(\d+)(?:/|$)", endpoint["url"])
        if match:
            return int(match.group(1))
    return None


def default_home() -> Path:
    return Path(os.environ.get("FANFLOW_HOME", ".fanflow"))
