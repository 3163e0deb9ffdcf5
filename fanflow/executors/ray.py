"""The Ray executor: every task a Ray task, every service a Ray actor, on a local Ray instance
or on a cluster.

The engine keeps its own retries, timeouts, caching and resume: Ray never retries a task
(``max_retries=0``), and a task's inputs and outputs go through the run's artifact store,
exactly as with the local executor, so Ray's object store only carries the small plain-data
task specs and results. Running tasks' progress reports go to a small actor of the run's
(``_ReportBox``) as they come, and the engine keeps one call to it waiting for them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import json
import logging
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from fanflow.executors.base import Executor, Status, TaskResult, TaskSpec
from fanflow.executors.processes import SERVICE_STOP_GRACE, error_tail, kill_group, start_service_process
from fanflow.executors.worker import describe, execute

_READY_POLL = 0.05
REPORT_WAIT = 10.0  # seconds a call for progress reports waits for some before it returns none
STOP_CHECK = 0.5  # how often ``wait`` checks on services that are stopping
MAX_BATCH = 16  # light tasks run by one Ray task


class RayExecutor(Executor):
    """Runs tasks on Ray: on the cluster at ``address`` (e.g. ``auto``, ``HOST:6379`` or
    ``ray://HOST:10001``; by default the one ``RAY_ADDRESS`` names, as for Ray itself), or on
    a local instance it starts with one CPU per core. If this
    process is connected to Ray already, it uses that connection and leaves it open;
    otherwise ``close`` disconnects (and stops the local instance it started). Other keyword
    arguments go to ``ray.init``."""

    name = "ray"

    def __init__(self, address: str | None = None, **ray_init_options: Any):
        self.address = address
        self.ray_init_options = ray_init_options
        self._connected = False  # whether this executor called ray.init
        self._cpus = 1.0  # the cluster's, when capacity was last asked
        self._shapes: dict[tuple, Any] = {}  # (cpus, gpus, memory) -> remote function options
        # Each Ray object awaited is watched through a future that, once done, is put on the
        # ``_done`` queue by a Ray thread: waiting costs nothing per task still in flight.
        self._batches: dict[Future, _Batch] = {}
        self._batch_of: dict[str, _Batch] = {}  # task -> the Ray task running it
        self._held: dict[tuple, list[TaskSpec]] = {}  # light tasks to send at the next flush
        self._to_cancel: list[_Batch] = []  # batches with a task stopped: cancel, send the rest again
        self._services: dict[str, _Service] = {}
        self._watch: dict[Future, tuple[str, _Service]] = {}  # ("ready" | "exit", service)
        self._done: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._results: list[TaskResult] = []  # reported without waiting (stopped or refused tasks)
        self._refusals: dict[tuple, str | None] = {}  # task shape -> why no node can take it
        self._box: Any = None  # the actor that holds progress reports, once a task was sent
        self._box_take: Future | None = None  # the call waiting for reports
        self._reports: list[tuple[str, int, dict]] = []

    # -- connecting ---------------------------------------------------------------------
    def _connect(self) -> None:
        if ray.is_initialized():
            return
        # Quiet: Ray's own start-up and shut-down messages, and its workers' logs, stay out of
        # the run's output (each task's output is in its log files).
        options = {"log_to_driver": False, "logging_level": logging.ERROR, **self.ray_init_options}
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **options)
        else:
            options.setdefault("num_cpus", os.cpu_count() or 1)
            options.setdefault("include_dashboard", False)
            ray.init(address="local", **options)
        self._connected = True

    def capacity(self) -> dict[str, float]:
        self._connect()
        resources = ray.cluster_resources()
        self._cpus = float(resources.get("CPU", 1.0))
        return {
            "cpus": float(resources.get("CPU", 0.0)),
            "gpus": float(resources.get("GPU", 0.0)),
            "memory": float(resources.get("memory", 0.0)),
        }

    def start(self) -> None:
        self._connect()

    # -- submitting ---------------------------------------------------------------------
    def submit(self, spec: TaskSpec) -> None:
        self._connect()
        refusal = self._refusal(spec)
        if refusal:
            self._results.append(TaskResult(spec.task, spec.attempt, "failed", error=refusal, retryable=False,
                                            ended=time.time(), worker="ray"))
            return
        if spec.kind == "service":
            self._start_service(spec)
        elif spec.light:
            self._held.setdefault(_shape(spec), []).append(spec)
        else:
            self._send([spec])

    def _refusal(self, spec: TaskSpec) -> str | None:
        """Why no single node of the cluster can run the task (Ray would hold it forever), or
        None. The cluster's total may be enough while every node is too small."""
        shape = _shape(spec)
        if shape not in self._refusals:
            self._refusals[shape] = None
            need = {k: v for k, v in (("CPU", spec.cpus), ("GPU", spec.gpus), ("memory", spec.memory or 0)) if v}
            nodes = [node for node in ray.nodes() if node.get("Alive")]
            fits = [n for n in nodes if all(n["Resources"].get(k, 0) + 1e-9 >= v for k, v in need.items())]
            if nodes and not fits:
                largest = max(nodes, key=lambda n: [n["Resources"].get(k, 0) for k in need])
                have = largest["Resources"]
                self._refusals[shape] = (
                    f"{spec.task} asks for {_amounts(need)}, more than any node of the Ray cluster has: the "
                    f"largest, node {largest['NodeID'][:12]} at {largest['NodeManagerAddress']}, has "
                    f"{_amounts({k: have.get(k, 0) for k in need})}"
                )
        return self._refusals[shape]

    def flush(self) -> None:
        """Light tasks (steps that proved to be made of tiny tasks) go out in batches, a few
        per Ray task: Ray's own cost per task is then shared by the batch."""
        self._settle_stopped()
        held, self._held = self._held, {}
        for shape, specs in held.items():
            # As many batches as there are cores without one (at least one), at most
            # MAX_BATCH tasks each: every core has work, and batches stay large.
            slots = max(1, int(self._cpus // shape[0])) if shape[0] else len(specs)
            size = min(MAX_BATCH, math.ceil(len(specs) / max(1, slots - len(self._batches))))
            for first in range(0, len(specs), size):
                self._send(specs[first : first + size])

    def _send(self, specs: list[TaskSpec]) -> None:
        if self._box is None:
            self._box = _report_box_actor().options(num_cpus=0).remote()
            self._take_reports()
        ref = self._remote(specs[0]).remote([spec.to_dict() for spec in specs], self._box)
        batch = _Batch(ref, self._future(ref), specs)
        self._batches[batch.future] = batch
        for spec in specs:
            self._batch_of[spec.task] = batch

    def _take_reports(self) -> None:
        self._box_take = self._future(self._box.take.remote(REPORT_WAIT))

    def _future(self, ref: ray.ObjectRef) -> Future:
        future = ref.future()
        future.add_done_callback(self._done.put)
        return future

    def _remote(self, spec: TaskSpec):
        shape = _shape(spec)
        remote = self._shapes.get(shape)
        if remote is None:
            remote = self._shapes[shape] = _run_remote().options(**_resources(spec))
        return remote

    # -- collecting ---------------------------------------------------------------------
    def wait(self, timeout: float | None) -> list[TaskResult]:
        self.flush()
        results, self._results = self._results, []
        if results or (timeout is None and not (self._batches or self._watch)):
            timeout = 0
        elif timeout is not None:
            timeout = max(timeout, 0.0)
        if self._kill_overdue_services():
            timeout = STOP_CHECK if timeout is None else min(timeout, STOP_CHECK)
        done = []
        with contextlib.suppress(queue.Empty):
            done.append(self._done.get(timeout=timeout))
            while True:
                done.append(self._done.get_nowait())
        for future in done:
            if future is self._box_take:
                self._took_reports(future)
                continue
            batch = self._batches.pop(future, None)
            if batch is not None:
                results += self._batch_results(batch, future)
                continue
            watched = self._watch.pop(future, None)
            if watched is not None:
                results += self._service_event(*watched, future)
            # anything else was cancelled, its tasks reported already
        return results

    def _took_reports(self, future: Future) -> None:
        try:
            self._reports += future.result()
        except ray.exceptions.RayError:
            self._box = self._box_take = None  # the actor died: the next task sent starts another
            return
        self._take_reports()

    def reports(self) -> list[tuple[str, int, dict]]:
        reports, self._reports = self._reports, []
        return reports

    def _batch_results(self, batch: _Batch, future: Future) -> list[TaskResult]:
        specs = [spec for spec in batch.specs if self._batch_of.get(spec.task) is batch]
        for spec in specs:
            del self._batch_of[spec.task]
        names = {spec.task for spec in specs}
        try:
            return [TaskResult.from_dict(result) for result in future.result() if result["task"] in names]
        except ray.exceptions.RayError as exc:
            if len(specs) > 1 and _crashed(exc):
                for spec in specs:  # which one took the worker down is unknown: run each alone
                    self._send([spec])
                return []
            return [_failure(spec, exc) for spec in specs]

    # -- stopping -----------------------------------------------------------------------
    def stop(self, task: str, status: Status = "cancelled", reason: str = "") -> None:
        for specs in self._held.values():
            for spec in specs:
                if spec.task == task:
                    specs.remove(spec)
                    self._results.append(_stopped(spec, status, reason))
                    return
        batch = self._batch_of.pop(task, None)
        if batch is not None:
            spec = next(spec for spec in batch.specs if spec.task == task)
            self._results.append(_stopped(spec, status, reason))
            if batch not in self._to_cancel:
                self._to_cancel.append(batch)  # at the next flush: all stops of a round at once
            return
        service = self._services.get(task)
        if service is not None and service.stopping is None:
            service.stopping, service.stop_reason = status, reason
            service.actor.terminate.remote(SERVICE_STOP_GRACE)  # its result comes when it has exited
            service.kill_at = time.monotonic() + SERVICE_STOP_GRACE + 2

    def _settle_stopped(self) -> None:
        """Cancel each Ray task that held a stopped task (killing its worker, and so the
        task's children); its other tasks, not stopped, start again in a new one."""
        batches, self._to_cancel = self._to_cancel, []
        for batch in batches:
            if self._batches.pop(batch.future, None) is None:
                continue  # it ended meanwhile: its results are being taken
            ray.cancel(batch.ref, force=True)
            rest = [spec for spec in batch.specs if self._batch_of.get(spec.task) is batch]
            if rest:
                self._send(rest)

    def _kill_overdue_services(self) -> bool:
        """Kill the actor of a service that was told to stop but has not ended in time (one
        that Ray has not placed yet cannot even be told): its watchers then fail, and so its
        end is reported. Says whether any service is still stopping."""
        now, stopping = time.monotonic(), False
        for service in self._services.values():
            if service.kill_at is not None:
                if now >= service.kill_at:
                    ray.kill(service.actor)
                    service.kill_at = math.inf
                stopping = True
        return stopping

    def close(self) -> None:
        for batch in self._batches.values():
            ray.cancel(batch.ref, force=True)
        self._batches.clear()
        self._batch_of.clear()
        self._held.clear()
        self._to_cancel.clear()
        for name in list(self._services):
            self.stop(name, "cancelled", "the run ended")
        exits = [future for future, (what, _) in self._watch.items() if what == "exit"]
        concurrent.futures.wait(exits, timeout=SERVICE_STOP_GRACE + 5)
        for service in self._services.values():
            ray.kill(service.actor)
        self._services.clear()
        self._watch.clear()
        self._results.clear()
        if self._box is not None:
            ray.kill(self._box)
            self._box = self._box_take = None
        self._reports.clear()
        if self._connected:  # stops a local instance it started; only disconnects from a cluster
            ray.shutdown()
            self._connected = False

    # -- services -----------------------------------------------------------------------
    def _start_service(self, spec: TaskSpec) -> None:
        actor = _service_actor().options(**_resources(spec)).remote(spec.to_dict())
        service = self._services[spec.task] = _Service(spec, actor, time.time())
        self._watch[self._future(actor.run.remote())] = ("exit", service)
        self._watch[self._future(actor.ready.remote())] = ("ready", service)

    def _service_event(self, what: str, service: _Service, future: Future) -> list[TaskResult]:
        spec = service.spec
        if self._services.get(spec.task) is not service:
            return []  # already reported as ended
        try:
            outcome = future.result()
        except ray.exceptions.RayError as exc:
            outcome = {"code": None, "error": f"the service's Ray actor died: {_ray_error(exc)}"}
        if what == "ready":
            if outcome is None or "endpoint" not in outcome:
                return []  # it ended before it was ready: its exit is reported instead
            return [
                TaskResult(
                    spec.task,
                    spec.attempt,
                    "serving",
                    output=outcome["endpoint"],
                    started=service.started,
                    worker=outcome["worker"],
                )
            ]
        del self._services[spec.task]
        for other, (_, watched) in list(self._watch.items()):
            if watched is service:
                del self._watch[other]
        ray.kill(service.actor)
        if service.stopping:
            return [
                TaskResult(
                    spec.task,
                    spec.attempt,
                    service.stopping,
                    error=service.stop_reason or None,
                    ended=time.time(),
                )
            ]
        error = outcome.get("error") or f"the service exited with code {outcome['code']}"
        return [TaskResult(spec.task, spec.attempt, "exited", error=error, ended=time.time())]


class _Batch:
    """One Ray task, running one task or a batch of light ones in turn."""

    def __init__(self, ref: ray.ObjectRef, future: Future, specs: list[TaskSpec]):
        self.ref = ref
        self.future = future
        self.specs = specs


class _Service:
    def __init__(self, spec: TaskSpec, actor: Any, started: float):
        self.spec = spec
        self.actor = actor
        self.started = started
        self.stopping: Status | None = None
        self.stop_reason = ""
        self.kill_at: float | None = None  # when to kill its actor if it has not ended


def _shape(spec: TaskSpec) -> tuple:
    return spec.cpus, spec.gpus, spec.memory


def _amounts(resources: dict[str, float]) -> str:
    names = {"CPU": "cpus", "GPU": "gpus", "memory": "bytes of memory"}
    return ", ".join(f"{amount:g} {names[key]}" for key, amount in resources.items())


def _resources(spec: TaskSpec) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": spec.cpus, "num_gpus": spec.gpus}
    if spec.memory:
        options["memory"] = spec.memory
    return options


def _crashed(exc: ray.exceptions.RayError) -> bool:
    return not isinstance(
        exc,
        ray.exceptions.RayTaskError | ray.exceptions.TaskCancelledError | ray.exceptions.RuntimeEnvSetupError,
    )


def _failure(spec: TaskSpec, exc: ray.exceptions.RayError) -> TaskResult:
    trace = None
    if isinstance(exc, ray.exceptions.RayTaskError):  # the task body raised outside the step
        status, error, retryable, trace = "failed", describe(exc.cause or exc), True, str(exc)
    elif isinstance(exc, ray.exceptions.TaskCancelledError):
        status, error, retryable = "cancelled", _ray_error(exc), False
    elif isinstance(exc, ray.exceptions.RuntimeEnvSetupError):
        status, error, retryable = "failed", _ray_error(exc), False
    else:  # the worker died: crash, OOM kill, lost node
        status, error, retryable = "crashed", f"the Ray worker died: {_ray_error(exc)}", True
    return TaskResult(
        spec.task,
        spec.attempt,
        status,
        error=error,
        traceback=trace,
        retryable=retryable,
        ended=time.time(),
        worker="ray",
    )


def _stopped(spec: TaskSpec, status: Status, reason: str) -> TaskResult:
    return TaskResult(spec.task, spec.attempt, status, error=reason or None, ended=time.time(), worker="ray")


def _ray_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- inside a Ray worker ------------------------------------------------------------------
_REMOTE = None
_SERVICE_ACTOR = None
_REPORT_BOX = None


def _run_remote():
    global _REMOTE
    if _REMOTE is None:
        _REMOTE = ray.remote(max_retries=0)(run_tasks)
    return _REMOTE


def _service_actor():
    global _SERVICE_ACTOR
    if _SERVICE_ACTOR is None:
        _SERVICE_ACTOR = ray.remote(max_restarts=0, max_concurrency=4)(_ServiceHost)
    return _SERVICE_ACTOR


def _report_box_actor():
    global _REPORT_BOX
    if _REPORT_BOX is None:
        _REPORT_BOX = ray.remote(max_restarts=0)(_ReportBox)
    return _REPORT_BOX


class _ReportBox:
    """A Ray actor (asynchronous) holding running tasks' progress reports until the engine
    takes them: tasks put theirs without waiting, and ``take`` returns as soon as there are
    some, or empty-handed after ``timeout`` seconds."""

    def __init__(self):
        self.reports: list[tuple[str, int, dict]] = []
        self.arrived = asyncio.Event()

    async def put(self, reports: list[tuple[str, int, dict]]) -> None:
        self.reports += reports
        self.arrived.set()

    async def take(self, timeout: float) -> list[tuple[str, int, dict]]:
        if not self.reports:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()
        reports, self.reports = self.reports, []
        return reports


_worker_name: str | None = None


def run_tasks(messages: list[dict[str, Any]], box: Any = None) -> list[dict[str, Any]]:
    """The body of a Ray task: fanflow task attempts, one after the other; their progress
    reports go to ``box`` (a ``_ReportBox``)."""
    send = None
    if box is not None:
        def send(task: str, attempt: int, report: dict) -> None:
            box.put.remote([(task, attempt, report)])
    return [run_task(message, send) for message in messages]


def run_task(message: dict[str, Any], send=None) -> dict[str, Any]:
    """One fanflow task attempt, its output in its log files."""
    global _worker_name
    if _worker_name is None:
        _worker_name = f"ray {socket.gethostname()} pid {os.getpid()}"
    spec = TaskSpec(**message)
    _modules.refresh(spec.import_paths)
    loaded = len(sys.modules)
    with _captured(spec.log_prefix):
        result = execute(spec, worker=_worker_name, send=send)
    if len(sys.modules) != loaded:
        _modules.remember()
    return result.to_dict()


@contextlib.contextmanager
def _captured(prefix: str | None):
    """Send file descriptors 1 and 2 (so C code and child processes too) to the attempt's
    log files, then give the Ray worker its own back: it runs more tasks, and logs."""
    if not prefix:
        yield
        return
    paths = (prefix + ".out", prefix + ".err")
    _flush()
    saved = (os.dup(1), os.dup(2))
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # lines reach the file as they are printed
    try:
        for fd, path in zip((1, 2), paths, strict=True):
            handle = _open_log(path)
            os.dup2(handle, fd)
            os.close(handle)
        yield
    finally:
        _flush()
        for fd, old in zip((1, 2), saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        for path in paths:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) == 0:
                    os.unlink(path)


def _open_log(path: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:  # a node other than the engine's, without a shared file system
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o644)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


class _WorkflowModules:
    """A Ray worker runs task after task, of run after run. A local worker process lives for
    one run, so it imports the workflow's own modules afresh each time; here they are
    forgotten when a task comes from another workflow folder or their file changed, so that a
    run never calls code older than the code its cache keys were computed from."""

    def __init__(self):
        self.paths: list[str] = []
        self.added: list[str] = []  # of those, the ones this process put on sys.path
        self.files: dict[str, tuple[str, tuple[int, int] | None]] = {}  # module -> file, stamp

    def refresh(self, paths: list[str]) -> None:
        if paths != self.paths or any(_stamp(file) != stamp for file, stamp in self.files.values()):
            for name in self.files:
                sys.modules.pop(name, None)
            self.files.clear()
            for folder in self.added:
                if folder not in paths:
                    with contextlib.suppress(ValueError):
                        sys.path.remove(folder)
            self.added = [f for f in paths if f not in sys.path or f in self.added]
            self.paths = list(paths)
            importlib.invalidate_caches()

    def remember(self) -> None:
        if not self.paths:
            return
        roots = tuple(os.path.join(folder, "") for folder in self.paths)
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if name not in self.files and isinstance(file, str) and file.startswith(roots):
                self.files[name] = (file, _stamp(file))


def _stamp(file: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(file)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


_modules = _WorkflowModules()


class _ServiceHost:
    """A Ray actor that holds a service's resources on its node and runs the service there as
    a process of its own, as the local executor does (``python -m fanflow.executors.service``),
    so a service stops the same way everywhere: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, message: dict[str, Any]):
        self.spec = TaskSpec(**message)
        self.folder = Path(tempfile.mkdtemp(prefix="fanflow-service-"))
        self.ready_file = self.folder / "ready.json"
        self.process: subprocess.Popen | None = None
        self.started = threading.Event()
        self.ended = threading.Event()

    def run(self) -> dict[str, Any]:
        """Start the service and wait for it to end. The process is started from the thread
        that waits for it, which lives as long as it does: the process dies with that thread."""
        spec = self.spec
        logs = []
        try:
            self.process, logs = start_service_process(spec, self.folder, self.ready_file)
        except OSError as exc:
            self.ended.set()
            return {"code": None, "error": f"cannot start the service: {exc}"}
        finally:
            self.started.set()
            for handle in logs:
                handle.close()
        code = self.process.wait()
        self.ended.set()
        why = error_tail(spec.log_prefix)
        return {"code": code, "error": f"the service exited with code {code}" + (f": {why}" if why else "")}

    def ready(self) -> dict[str, Any] | None:
        """Wait until the service announces itself: its endpoint, or None if it ended first."""
        while not self.ended.is_set():
            if self.ready_file.exists():
                endpoint = json.loads(self.ready_file.read_text(encoding="utf-8"))
                return {"endpoint": endpoint, "worker": f"ray {socket.gethostname()} pid {self.process.pid}"}
            time.sleep(_READY_POLL)
        return None

    def terminate(self, grace: float) -> None:
        self.started.wait()
        if self.process is None or self.process.poll() is not None:
            return
        kill_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            kill_group(self.process.pid)
