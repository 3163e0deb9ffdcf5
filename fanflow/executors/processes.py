"""Process plumbing shared by the local executor's workers and services.

A task's whole process tree dies with it. Each worker and service runs in a session of its
own and is a *child subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): a process its task
starts stays its descendant even when it starts a session of its own and its parent exits
(a daemon's double fork), instead of being handed to PID 1. So the engine finds every one of
them when it stops a task (timeout, cancel: ``kill_group``), and when the engine itself dies
the worker is told (``PR_SET_PDEATHSIG``), kills its descendants and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
SERVICE_STOP_GRACE = 5.0  # seconds a service gets to shut down after SIGTERM


def _prctl(option: int, value: int) -> bool:
    if sys.platform != "linux":
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """Ask Linux to kill this process when the process that started it dies, so a killed
    engine leaves no orphaned workers behind (a no-op elsewhere)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def guard_task_tree() -> None:
    """For a process that runs tasks: become the reaper of every process they start, kill
    those that are left when this process ends, and when the engine (the parent) dies, kill
    them all and exit. Linux only; elsewhere it only does ``die_with_parent``."""
    parent = os.getppid()
    if not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
        die_with_parent()
        return
    signal.signal(signal.SIGTERM, _exit_with_tree)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    atexit.register(kill_descendants)
    if os.getppid() != parent:  # the engine died before it could tell us
        _exit_with_tree(signal.SIGTERM, None)


def _exit_with_tree(signum, _frame) -> None:
    kill_descendants()
    os._exit(128 + signum)


def kill_descendants(pid: int | None = None) -> None:
    """Kill every descendant of a process (this one by default), not the process itself."""
    try:
        root = psutil.Process(pid or os.getpid())
    except psutil.Error:
        return
    _kill_tree(root, include_root=False)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and every child in its process group; with SIGKILL, also every
    descendant that left the group (started a session of its own), frozen first so that
    none can start another while they are found."""
    if sig == signal.SIGKILL:
        with contextlib.suppress(psutil.Error):
            _kill_tree(psutil.Process(pid), include_root=True)
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _kill_tree(root: psutil.Process, include_root: bool) -> None:
    frozen: dict[int, psutil.Process] = {}
    if include_root:
        _signal(root, signal.SIGSTOP)
        frozen[root.pid] = root
    while True:  # freeze until no new descendant appears
        try:
            found = [p for p in root.children(recursive=True) if p.pid not in frozen]
        except psutil.Error:
            found = []
        if not found:
            break
        for process in found:
            _signal(process, signal.SIGSTOP)
            frozen[process.pid] = process
    for process in frozen.values():
        _signal(process, signal.SIGKILL)


def _signal(process: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error, OSError):
        process.send_signal(sig)


def exit_description(code: int | None) -> str:
    """How a process ended, for people: ``exit code 3``, ``killed by SIGSEGV (signal 11)``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "a signal"
        return f"killed by {name} (signal {-code})"
    return f"exit code {code}"


class OutputCapture:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C code and child
    processes are captured too) to each task attempt's log files, and to /dev/null between
    tasks; no empty log file is left behind.

    A task that may run for a while writes straight into its attempt's files, line by line
    (Python's stdout is made line-buffered), so that ``fanflow logs --follow`` shows them as
    they grow. A tiny task (``spool``) writes into a spool file per stream that this process
    keeps for its whole life; its bytes are copied to the attempt's files afterwards, and only
    if it wrote any: a tiny task that prints nothing costs two ``fstat`` calls and opens no
    file. A spooled task that turns out to run for more than ``UNSPOOL_AFTER`` seconds has its
    output moved to its files while it runs (``unspool_if_long``, from another thread)."""

    UNSPOOL_AFTER = 1.0  # seconds

    def __init__(self):
        self._null = os.open(os.devnull, os.O_WRONLY)
        self._paths: tuple[str, str] | None = None
        self._spools: tuple[int, int] | None = None
        self._target: str = "null"  # where fds 1 and 2 point: null, files or spools
        self._since = 0.0  # when the spooled task began
        self._unspooled = False  # the running task's output left the spools while it ran
        self._lock = threading.Lock()  # the task's thread against ``unspool_if_long``
        with contextlib.suppress(AttributeError, ValueError):
            sys.stdout.reconfigure(line_buffering=True)

    def idle(self) -> None:
        with self._lock:
            self._idle()

    def _idle(self) -> None:
        self._flush()
        if self._target != "null":
            os.dup2(self._null, 1)
            os.dup2(self._null, 2)
            self._target = "null"

    def begin(self, prefix: str | None, spool: bool = False) -> None:
        with self._lock:
            self._begin(prefix, spool)

    def _begin(self, prefix: str | None, spool: bool) -> None:
        if prefix is None:
            self._idle()
            return
        self._flush()
        self._paths = (prefix + ".out", prefix + ".err")
        if spool:
            self._since = time.monotonic()
            if self._target != "spools":
                for fd, spool_fd in zip((1, 2), self._spool_files(), strict=True):
                    os.dup2(spool_fd, fd)
                self._target = "spools"
            return
        for fd, path in zip((1, 2), self._paths, strict=True):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        self._target = "files"

    def end(self) -> None:
        with self._lock:
            self._end()

    def _end(self) -> None:
        if self._paths is None:
            return
        paths, self._paths = self._paths, None
        if self._target == "spools":
            self._flush()
            for spool, path in zip(self._spools, paths, strict=True):
                if os.fstat(spool).st_size:
                    _move_spooled(spool, path)
            return
        self._idle()
        if self._unspooled:  # a child process started before may still have written to the spools
            self._unspooled = False
            for spool, path in zip(self._spools, paths, strict=True):
                if os.fstat(spool).st_size:
                    _move_spooled(spool, path, append=True)
        for path in paths:
            try:
                if os.path.getsize(path) == 0:
                    os.unlink(path)
            except OSError:
                pass

    def unspool_if_long(self) -> None:
        """If a spooled task has run for over ``UNSPOOL_AFTER`` seconds, copy what it wrote to
        its files and point its output straight at them. The copy is made before the switch
        and what came in between after it: every byte is kept."""
        with self._lock:
            if self._target != "spools" or self._paths is None or time.monotonic() - self._since < self.UNSPOOL_AFTER:
                return
            self._flush()
            handles: list[int] = []
            try:
                for path in self._paths:
                    handles.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            except OSError:
                for handle in handles:
                    os.close(handle)
                return  # it stays spooled, and is copied when it ends
            for fd, spool, handle in zip((1, 2), self._spools, handles, strict=True):
                copied = _copy(spool, handle, 0)
                os.dup2(handle, fd)
                _copy(spool, handle, copied)
                os.close(handle)
                os.ftruncate(spool, 0)
            self._target, self._unspooled = "files", True

    def _spool_files(self) -> tuple[int, int]:
        if self._spools is None:
            spools = []
            for _ in range(2):
                handle, path = tempfile.mkstemp(prefix="fanflow-spool-")
                os.close(handle)
                # Appending: whatever writes (this process, a child) lands after what is there.
                spools.append(os.open(path, os.O_RDWR | os.O_APPEND))
                os.unlink(path)
            self._spools = (spools[0], spools[1])
        return self._spools

    @staticmethod
    def _flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:  # noqa: SIM105 - twice per task, cheaper than contextlib.suppress
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass


def _move_spooled(spool: int, path: str, append: bool = False) -> None:
    """Copy what a tiny task wrote to its log file, then empty the spool."""
    with contextlib.suppress(OSError):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)
        try:
            _copy(spool, out, 0)
        finally:
            os.close(out)
    os.ftruncate(spool, 0)


def _copy(source: int, target: int, offset: int) -> int:
    """Write what ``source`` holds from ``offset`` on to ``target``; returns where it ended."""
    while chunk := os.pread(source, 1 << 20, offset):
        os.write(target, chunk)
        offset += len(chunk)
    return offset


class Progress:
    """A counter that a worker process keeps in memory shared with the engine: how many tasks
    it has begun. Results travel in batches; if the worker dies, this tells which of the
    tasks it held was running (writing it costs a store to memory, no system call)."""

    def __init__(self, fd: int | None = None):
        if fd is None:
            handle, path = tempfile.mkstemp(prefix="fanflow-progress-")
            os.unlink(path)
            os.ftruncate(handle, 8)
            fd = handle
        self.fd = fd
        self._map = mmap.mmap(fd, 8)
        self._counter = memoryview(self._map).cast("Q")

    def begun(self, count: int) -> None:
        self._counter[0] = count

    def count(self) -> int:
        return self._counter[0]

    def close_fd(self) -> None:
        """The map stays; the descriptor (passed to the worker) is no longer needed here."""
        os.close(self.fd)

    def close(self) -> None:
        self._counter.release()
        self._map.close()


def error_tail(log_prefix: str | None, lines: int = 3) -> str:
    if not log_prefix:
        return ""
    try:
        text = Path(log_prefix + ".err").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-lines:])


def start_service_process(spec, folder: Path, ready_file: Path) -> tuple[subprocess.Popen, list]:
    """Start ``python -m fanflow.executors.service`` for a service task, in a session of its
    own, its output going to the attempt's log files. Returns the process and the open log
    files (the caller closes them once the process has ended)."""
    from fanflow import runtime

    folder.mkdir(parents=True, exist_ok=True)
    ready_file.unlink(missing_ok=True)
    spec_file = folder / f"spec-{spec.attempt}.json"
    spec_file.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    env = dict(os.environ)
    env[runtime.READY_FILE_ENV] = str(ready_file)
    env[runtime.PORT_ENV] = str(spec.service_port)
    env["PYTHONPATH"] = os.pathsep.join([*spec.import_paths, env.get("PYTHONPATH", "")]).strip(os.pathsep)
    logs = []
    if spec.log_prefix:
        Path(spec.log_prefix).parent.mkdir(parents=True, exist_ok=True)
        logs = [open(spec.log_prefix + ".out", "ab"), open(spec.log_prefix + ".err", "ab")]  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "fanflow.executors.service", str(spec_file)],
            env=env, start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=logs[0] if logs else subprocess.DEVNULL, stderr=logs[1] if logs else subprocess.DEVNULL,
        )
    except OSError:
        for handle in logs:
            handle.close()
        raise
    return process, logs
