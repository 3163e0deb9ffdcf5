"""The embedded default executor: worker processes for CPU-bound steps (real parallelism on
every core), threads for light ones, and a process of its own for each service."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from fanflow.executors.base import Executor, Status, TaskResult, TaskSpec
from fanflow.executors.processes import (
    SERVICE_STOP_GRACE,
    Progress,
    error_tail,
    exit_description,
    kill_group,
    start_service_process,
)
from fanflow.executors.wire import REPORT, own_part, result_from, shared_part


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    conn: multiprocessing.connection.Connection
    name: str
    tasks: deque[TaskSpec] = field(default_factory=deque)  # sent, in the order it runs them
    outbox: list[tuple] = field(default_factory=list)  # tasks to send at the next flush
    steps: dict[int, dict] = field(default_factory=dict)  # shared parts to send at the next flush
    known: set[int] = field(default_factory=set)  # shared parts it has
    heavy: int = 0  # tasks in hand that are not light
    dropped: set[str] = field(default_factory=set)  # queued tasks already reported stopped
    progress: Progress | None = None  # how many tasks it has begun, which it counts itself
    done: int = 0  # results received from it
    used: bool = False  # ever given a task

    @property
    def light(self) -> bool:
        return not self.heavy


@dataclass(eq=False)
class _Service:
    spec: TaskSpec
    process: subprocess.Popen
    ready_file: Path
    started: float
    ready: bool = False
    stopping: Status | None = None
    stop_reason: str = ""
    logs: list = field(default_factory=list)


def _count_gpus() -> int:
    value = os.environ.get("FANFLOW_GPUS")
    if value is not None:
        return int(value)
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self,
        cpus: float | None = None,
        gpus: int | None = None,
        memory: int | None = None,
        max_threads: int = 32,
    ):
        self._capacity = {
            "cpus": float(cpus or os.cpu_count() or 1),
            "gpus": float(_count_gpus() if gpus is None else gpus),
            "memory": float(memory or psutil.virtual_memory().total),
        }
        self._idle: list[_Worker] = []
        self._busy: dict[str, _Worker] = {}  # task -> the worker holding it
        self._workers: list[_Worker] = []  # every live worker
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="fanflow-task")
        self._thread_tasks: dict[str, TaskSpec] = {}
        self._results: queue.SimpleQueue[TaskResult] = queue.SimpleQueue()
        self._reports: deque[tuple[str, int, dict]] = deque()  # progress reports of running tasks
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._services: dict[str, _Service] = {}
        self._outboxes: dict[int, _Worker] = {}
        self._templates: dict[tuple, tuple[int, dict]] = {}  # (run, step, light) -> id, shared part
        self._count = 0
        self._started = False

    def capacity(self) -> dict[str, float]:
        return dict(self._capacity)

    def start(self, prestart: bool = True) -> None:
        """Start one worker per core now (``prestart``), so that they import while the engine
        records the run's start: a worker takes a while to start. One that never gets a task is
        killed at ``close``, at no cost to a run whose tasks were all reused. Without
        ``prestart`` they start with the first task."""
        if prestart and not self._started:
            self._spawn_all()
        self._started = True

    def _spawn_all(self) -> None:
        while len(self._workers) < max(1, int(self._capacity["cpus"])):
            self._idle.append(self._spawn())

    def _spawn(self) -> _Worker:
        self._count += 1
        name = f"local-{self._count}"
        parent, child = socket.socketpair()
        progress = Progress()
        with child:
            # A session of its own: stopping a task kills the task's children too.
            process = subprocess.Popen(
                [sys.executable, "-m", "fanflow.executors.worker_process", str(child.fileno()), name,
                 str(progress.fd)],
                pass_fds=[child.fileno(), progress.fd],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        progress.close_fd()
        worker = _Worker(process, multiprocessing.connection.Connection(parent.detach()), name, progress=progress)
        self._workers.append(worker)
        return worker

    # -- submitting ---------------------------------------------------------------------
    def submit(self, spec: TaskSpec) -> None:
        self.start()
        if spec.kind == "service":
            self._start_service(spec)
        elif spec.executor == "thread":
            self._thread_tasks[spec.task] = spec
            self._threads.submit(self._run_in_thread, spec)
        else:
            worker = self._pick_worker(spec)
            template, shared = self._template(spec)
            if template not in worker.known:
                worker.known.add(template)
                worker.steps[template] = shared
            worker.outbox.append(own_part(template, spec))
            worker.tasks.append(spec)
            worker.used = True
            if not spec.light:
                worker.heavy += 1
            self._busy[spec.task] = worker
            self._outboxes[id(worker)] = worker

    def _template(self, spec: TaskSpec) -> tuple[int, dict]:
        """The part of a spec that every task of its step shares, and its number."""
        key = (spec.run_id, spec.step, spec.light)
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = (len(self._templates), shared_part(spec))
        return found

    def flush(self) -> None:
        """One message per worker, however many tasks it was given since the last flush."""
        outboxes, self._outboxes = self._outboxes, {}
        for worker in outboxes.values():
            batch, worker.outbox = worker.outbox, []
            steps, worker.steps = worker.steps, {}
            try:
                worker.conn.send((steps, batch))
            except (OSError, ValueError):  # the worker died: what it held is reported crashed
                self._post_all(self._lost_results(worker, "the worker process died before its task started"))

    def _pick_worker(self, spec: TaskSpec) -> _Worker:
        if self._idle:
            return self._idle.pop()
        if not self._workers:
            self._spawn_all()
            return self._idle.pop()
        if spec.light and len(self._workers) >= self._capacity["cpus"]:
            # A tiny task waits in the queue of the least busy worker made only of tiny tasks,
            # rather than in a new process: the core admits only as many as keep them busy.
            queues = [w for w in self._workers if w.tasks and w.light]
            if queues:
                return min(queues, key=lambda w: len(w.tasks))
        return self._spawn()

    def _run_in_thread(self, spec: TaskSpec) -> None:
        from fanflow.executors.worker import execute

        worker = threading.current_thread().name
        try:
            result = execute(spec, worker=worker, own_process=False, send=self._report)
        except BaseException as exc:  # a pool thread drops what it raises: report it instead
            result = TaskResult(spec.task, spec.attempt, "crashed", error=f"{type(exc).__name__}: {exc}",
                                traceback=traceback.format_exc(), ended=time.time(), worker=worker)
        if self._thread_tasks.get(spec.task) is spec:
            del self._thread_tasks[spec.task]
            self._post(result)

    def _report(self, task: str, attempt: int, report: dict) -> None:
        self._reports.append((task, attempt, report))
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"!")

    def _post(self, result: TaskResult) -> None:
        self._results.put(result)
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"!")

    # -- collecting ---------------------------------------------------------------------
    def wait(self, timeout: float | None) -> list[TaskResult]:
        results = self._drain()
        if self._services:
            results += self._poll_services()
            timeout = 0.05 if timeout is None else min(timeout, 0.05)
        if results:
            timeout = 0
        workers = {w.conn: w for w in self._workers if w.tasks}
        for conn in multiprocessing.connection.wait([*workers, self._wake_r], timeout):
            if conn is self._wake_r:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
                continue
            worker = workers[conn]
            while worker.tasks:
                try:
                    rows = conn.recv()
                except (EOFError, OSError):
                    code = _exit_code(worker.process)
                    results += self._lost_results(worker, f"the worker process died ({exit_description(code)})")
                    break
                if type(rows) is tuple and rows[0] == REPORT:
                    self._reports.append(rows[1:])
                else:
                    worker.done += len(rows)
                    for row in rows:
                        self._finished(worker, result_from(row, worker.name), results)
                if not conn.poll():
                    break
        return results + self._drain()

    def reports(self) -> list[tuple[str, int, dict]]:
        reports = self._reports
        return [reports.popleft() for _ in range(len(reports))] if reports else []

    def _finished(self, worker: _Worker, result: TaskResult, results: list[TaskResult]) -> None:
        spec = worker.tasks.popleft()
        if not spec.light:
            worker.heavy -= 1
        if spec.task in worker.dropped:
            worker.dropped.discard(spec.task)
        else:
            self._busy.pop(spec.task, None)
            results.append(result)
        if not worker.tasks:
            self._idle.append(worker)

    def _lost_results(self, worker: _Worker, error: str) -> list[TaskResult]:
        """A worker died: the task it was running is reported as crashed; the others it held
        go to another worker (those queued behind it never started; those before it ended,
        but their results went down with it)."""
        held = [spec for spec in worker.tasks
                if self._busy.get(spec.task) is worker and spec.task not in worker.dropped]
        for spec in worker.tasks:
            if self._busy.get(spec.task) is worker:
                del self._busy[spec.task]
        begun = worker.progress.count() if worker.progress else worker.done + 1
        position = min(max(begun - worker.done - 1, 0), len(worker.tasks) - 1)
        running = list(worker.tasks)[position : position + 1]
        worker.tasks, worker.outbox, worker.heavy = deque(), [], 0
        self._outboxes.pop(id(worker), None)
        if worker in self._idle:
            self._idle.remove(worker)
        self._discard(worker)
        results = [TaskResult(spec.task, spec.attempt, "crashed", retryable=True, error=error,
                              ended=time.time(), worker=worker.name) for spec in held if spec in running]
        for spec in held:
            if spec not in running:
                self.submit(spec)
        return results

    def _post_all(self, results: list[TaskResult]) -> None:
        for result in results:
            self._post(result)

    def _drain(self) -> list[TaskResult]:
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    # -- stopping -----------------------------------------------------------------------
    def stop(self, task: str, status: Status = "cancelled", reason: str = "") -> None:
        worker = self._busy.pop(task, None)
        if worker is not None:
            spec = next(t for t in worker.tasks if t.task == task)
            self._post(
                TaskResult(
                    task, spec.attempt, status, error=reason or None, ended=time.time(), worker=worker.name
                )
            )
            if worker.tasks[0] is not spec:  # still queued: let it run, drop its result
                worker.dropped.add(task)
                return
            # Killing the worker stops what it runs and what waits behind it.
            others = [t for t in list(worker.tasks)[1:] if t.task not in worker.dropped]
            for other in others:
                self._busy.pop(other.task, None)
                self._post(
                    TaskResult(
                        other.task,
                        other.attempt,
                        status,
                        error="its worker was stopped",
                        ended=time.time(),
                        worker=worker.name,
                    )
                )
            worker.tasks.clear()
            kill_group(worker.process.pid)
            self._discard(worker)
            return
        spec = self._thread_tasks.pop(task, None)
        if spec is not None:  # a thread cannot be killed: its late result will be ignored
            self._post(TaskResult(task, spec.attempt, status, error=reason or None, ended=time.time()))
            return
        service = self._services.get(task)
        if service is not None and service.stopping is None:
            service.stopping, service.stop_reason = status, reason
            kill_group(service.process.pid, signal.SIGTERM)

    def _discard(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.process.poll() is None:
            kill_group(worker.process.pid)
        worker.process.wait()
        if worker.progress:
            worker.progress.close()

    def close(self) -> None:
        for name in list(self._services):
            self.stop(name, "cancelled", "the run ended")
        deadline = time.time() + SERVICE_STOP_GRACE
        for service in self._services.values():
            try:
                service.process.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                kill_group(service.process.pid)
                service.process.wait()
            for handle in service.logs:
                handle.close()
        self._services.clear()
        busy = [w for w in self._workers if w.tasks or not w.used]  # never used: it may still be starting
        for worker in busy:
            kill_group(worker.process.pid)
        idle = [w for w in self._idle if w not in busy]
        for worker in idle:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        for worker in [*idle, *busy]:
            try:
                worker.process.wait(2)
            except subprocess.TimeoutExpired:
                kill_group(worker.process.pid)
                worker.process.wait()
            worker.conn.close()
            if worker.progress:
                worker.progress.close()
        self._workers.clear()
        self._idle.clear()
        self._busy.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- services -----------------------------------------------------------------------
    def _start_service(self, spec: TaskSpec) -> None:
        folder = Path(spec.scratch or Path.cwd() / ".fanflow" / "tmp" / spec.task)
        ready_file = folder / f"ready-{spec.attempt}.json"
        process, logs = start_service_process(spec, folder, ready_file)
        self._services[spec.task] = _Service(spec, process, ready_file, time.time(), logs=logs)

    def _poll_services(self) -> list[TaskResult]:
        results = []
        for name, service in list(self._services.items()):
            spec = service.spec
            code = service.process.poll()
            if code is not None:
                del self._services[name]
                for handle in service.logs:
                    handle.close()
                if service.stopping:
                    results.append(
                        TaskResult(
                            name,
                            spec.attempt,
                            service.stopping,
                            error=service.stop_reason or None,
                            ended=time.time(),
                        )
                    )
                else:
                    why = error_tail(spec.log_prefix)
                    results.append(
                        TaskResult(
                            name,
                            spec.attempt,
                            "exited",
                            ended=time.time(),
                            error=(f"the service exited with code {code}" if code >= 0
                                   else f"the service was {exit_description(code)}") + (f": {why}" if why else ""),
                        )
                    )
                continue
            if not service.ready and service.ready_file.exists():
                service.ready = True
                endpoint = json.loads(service.ready_file.read_text(encoding="utf-8"))
                results.append(
                    TaskResult(
                        name,
                        spec.attempt,
                        "serving",
                        output=endpoint,
                        started=service.started,
                        worker=f"pid {service.process.pid}",
                    )
                )
        return results


def _exit_code(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(1)
    except subprocess.TimeoutExpired:
        return None
