"""The Ray executor: every task a Ray task, every service a Ray actor, on a local Ray instance
or on a cluster.

The engine keeps its own retries, timeouts, caching and resume: Ray never retries a task
(``max_retries=0``), and a task's inputs and outputs go through the run's artifact store,
exactly as with the local executor, so Ray's object store only carries the small plain-data
task specs and results.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from fanflow import runtime
from fanflow.executors.base import Executor, Status, TaskResult, TaskSpec
from fanflow.executors.local import SERVICE_STOP_GRACE, _tail
from fanflow.executors.processes import kill_group

_READY_POLL = 0.05


class RayExecutor(Executor):
    """Runs tasks on Ray: on the cluster at ``address`` (e.g. ``auto``, ``HOST:6379`` or
    ``ray://HOST:10001``), or on a local instance it starts with one CPU per core. If this
    process is connected to Ray already, it uses that connection and leaves it open;
    otherwise ``close`` disconnects (and stops the local instance it started). Other keyword
    arguments go to ``ray.init``."""

    name = "ray"

    def __init__(self, address: str | None = None, **ray_init_options: Any):
        self.address = address
        self.ray_init_options = ray_init_options
        self._connected = False  # whether this executor called ray.init
        self._shapes: dict[tuple, Any] = {}  # (cpus, gpus, memory) -> remote function options
        self._tasks: dict[ray.ObjectRef, TaskSpec] = {}
        self._services: dict[str, _Service] = {}
        self._watch: dict[ray.ObjectRef, tuple[str, _Service]] = {}  # ref -> ("ready" | "exit", service)
        self._results: list[TaskResult] = []  # reported without waiting (stopped tasks)

    # -- connecting ---------------------------------------------------------------------
    def _connect(self) -> None:
        if ray.is_initialized():
            return
        options = {"log_to_driver": False, **self.ray_init_options}
        if self.address:
            ray.init(address=self.address, **options)
        else:
            options.setdefault("num_cpus", os.cpu_count() or 1)
            options.setdefault("include_dashboard", False)
            ray.init(address="local", **options)
        self._connected = True

    def capacity(self) -> dict[str, float]:
        self._connect()
        resources = ray.cluster_resources()
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
        if spec.kind == "service":
            self._start_service(spec)
            return
        ref = self._remote(spec).remote(spec.to_dict())
        self._tasks[ref] = spec

    def _remote(self, spec: TaskSpec):
        shape = (spec.cpus, spec.gpus, spec.memory)
        remote = self._shapes.get(shape)
        if remote is None:
            remote = self._shapes[shape] = _run_remote().options(**_resources(spec))
        return remote

    # -- collecting ---------------------------------------------------------------------
    def wait(self, timeout: float | None) -> list[TaskResult]:
        results, self._results = self._results, []
        refs = [*self._tasks, *self._watch]
        if not refs:
            if timeout and not results:
                time.sleep(timeout)
            return results
        ready, rest = ray.wait(refs, num_returns=1, timeout=0 if results else timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        for ref in ready:
            spec = self._tasks.pop(ref, None)
            if spec is not None:
                results.append(_task_result(spec, ref))
                continue
            watched = self._watch.pop(ref, None)
            if watched is not None:
                results += self._service_event(*watched, ref)
        return results

    # -- stopping -----------------------------------------------------------------------
    def stop(self, task: str, status: Status = "cancelled", reason: str = "") -> None:
        for ref, spec in self._tasks.items():
            if spec.task == task:
                del self._tasks[ref]
                ray.cancel(ref, force=True)  # kills the worker and the task's children
                self._results.append(
                    TaskResult(
                        task, spec.attempt, status, error=reason or None, ended=time.time(), worker="ray"
                    )
                )
                return
        service = self._services.get(task)
        if service is not None and service.stopping is None:
            service.stopping, service.stop_reason = status, reason
            service.actor.terminate.remote(SERVICE_STOP_GRACE)  # its result comes when it has exited

    def close(self) -> None:
        for ref in list(self._tasks):
            ray.cancel(ref, force=True)
        self._tasks.clear()
        for name in list(self._services):
            self.stop(name, "cancelled", "the run ended")
        exits = [ref for ref, (what, _) in self._watch.items() if what == "exit"]
        if exits:
            ray.wait(exits, num_returns=len(exits), timeout=SERVICE_STOP_GRACE + 5)
        for service in self._services.values():
            ray.kill(service.actor)
        self._services.clear()
        self._watch.clear()
        self._results.clear()
        if self._connected:  # stops a local instance it started; only disconnects from a cluster
            ray.shutdown()
            self._connected = False

    # -- services -----------------------------------------------------------------------
    def _start_service(self, spec: TaskSpec) -> None:
        actor = _service_actor().options(**_resources(spec)).remote(spec.to_dict())
        service = self._services[spec.task] = _Service(spec, actor, time.time())
        self._watch[actor.run.remote()] = ("exit", service)
        self._watch[actor.ready.remote()] = ("ready", service)

    def _service_event(self, what: str, service: _Service, ref: ray.ObjectRef) -> list[TaskResult]:
        spec = service.spec
        if self._services.get(spec.task) is not service:
            return []  # already reported as ended
        try:
            outcome = ray.get(ref)
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


class _Service:
    def __init__(self, spec: TaskSpec, actor: Any, started: float):
        self.spec = spec
        self.actor = actor
        self.started = started
        self.stopping: Status | None = None
        self.stop_reason = ""


def _resources(spec: TaskSpec) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": spec.cpus, "num_gpus": spec.gpus}
    if spec.memory:
        options["memory"] = spec.memory
    return options


def _task_result(spec: TaskSpec, ref: ray.ObjectRef) -> TaskResult:
    try:
        return TaskResult.from_dict(ray.get(ref))
    except ray.exceptions.RayTaskError as exc:  # the task body raised outside the step itself
        status, error, retryable = "failed", _ray_error(exc), True
    except ray.exceptions.TaskCancelledError as exc:
        status, error, retryable = "cancelled", _ray_error(exc), False
    except ray.exceptions.RuntimeEnvSetupError as exc:
        status, error, retryable = "failed", _ray_error(exc), False
    except ray.exceptions.RayError as exc:  # the worker died: crash, OOM kill, lost node
        status, error, retryable = "crashed", f"the Ray worker died: {_ray_error(exc)}", True
    return TaskResult(
        spec.task, spec.attempt, status, error=error, retryable=retryable, ended=time.time(), worker="ray"
    )


def _ray_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- inside a Ray worker ------------------------------------------------------------------
_REMOTE = None
_SERVICE_ACTOR = None


def _run_remote():
    global _REMOTE
    if _REMOTE is None:
        _REMOTE = ray.remote(max_retries=0)(run_task)
    return _REMOTE


def _service_actor():
    global _SERVICE_ACTOR
    if _SERVICE_ACTOR is None:
        _SERVICE_ACTOR = ray.remote(max_restarts=0, max_concurrency=4)(_ServiceHost)
    return _SERVICE_ACTOR


_worker_name: str | None = None


def run_task(message: dict[str, Any]) -> dict[str, Any]:
    """The body of a Ray task: one fanflow task attempt, its output in its log files."""
    global _worker_name
    from fanflow.executors.worker import execute

    if _worker_name is None:
        _worker_name = f"ray {socket.gethostname()} pid {os.getpid()}"
    spec = TaskSpec(**message)
    _modules.refresh(spec.import_paths)
    loaded = len(sys.modules)
    with _captured(spec.log_prefix):
        result = execute(spec, worker=_worker_name)
    if len(sys.modules) != loaded:
        _modules.remember()
    return result.__dict__


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
    try:
        for fd, path in zip((1, 2), paths, strict=True):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
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
        spec_file = self.folder / "spec.json"
        spec_file.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
        env = dict(os.environ)
        env[runtime.READY_FILE_ENV] = str(self.ready_file)
        env[runtime.PORT_ENV] = str(spec.service_port)
        env["PYTHONPATH"] = os.pathsep.join([*spec.import_paths, env.get("PYTHONPATH", "")]).strip(os.pathsep)
        logs = []
        try:
            if spec.log_prefix:
                Path(spec.log_prefix).parent.mkdir(parents=True, exist_ok=True)
                logs = [open(spec.log_prefix + ".out", "ab"), open(spec.log_prefix + ".err", "ab")]  # noqa: SIM115
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fanflow.executors.service", str(spec_file)],
                env=env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=logs[0] if logs else subprocess.DEVNULL,
                stderr=logs[1] if logs else subprocess.DEVNULL,
            )
        except OSError as exc:
            self.ended.set()
            return {"code": None, "error": f"cannot start the service: {exc}"}
        finally:
            self.started.set()
            for handle in logs:
                handle.close()
        code = self.process.wait()
        self.ended.set()
        why = _tail(spec.log_prefix)
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
