"""Process plumbing shared by the local executor's workers and services."""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

_PR_SET_PDEATHSIG = 1
SERVICE_STOP_GRACE = 5.0  # seconds a service gets to shut down after SIGTERM


def die_with_parent() -> None:
    """Ask Linux to kill this process when the process that started it dies, so a killed
    engine leaves no orphaned workers behind (a no-op elsewhere)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and every child in its process group."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class OutputCapture:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C code and child
    processes are captured too) to each task attempt's log files, and to /dev/null between
    tasks; no empty log file is left behind.

    A task that may run for a while writes straight into its attempt's files, so that
    ``fanflow logs --follow`` shows them as they grow. A tiny task (``spool``) writes into a
    spool file per stream that this process keeps for its whole life; its bytes are copied to
    the attempt's files afterwards, and only if it wrote any: a tiny task that prints nothing
    costs two ``fstat`` calls and opens no file."""

    def __init__(self):
        self._null = os.open(os.devnull, os.O_WRONLY)
        self._paths: tuple[str, str] | None = None
        self._spools: tuple[int, int] | None = None
        self._target: str = "null"  # where fds 1 and 2 point: null, files or spools

    def idle(self) -> None:
        self._flush()
        if self._target != "null":
            os.dup2(self._null, 1)
            os.dup2(self._null, 2)
            self._target = "null"

    def begin(self, prefix: str | None, spool: bool = False) -> None:
        if prefix is None:
            self.idle()
            return
        self._flush()
        self._paths = (prefix + ".out", prefix + ".err")
        if spool:
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
        if self._paths is None:
            return
        paths, self._paths = self._paths, None
        if self._target == "spools":
            self._flush()
            for spool, path in zip(self._spools, paths, strict=True):
                if os.fstat(spool).st_size:
                    _move_spooled(spool, path)
            return
        self.idle()
        for path in paths:
            try:
                if os.path.getsize(path) == 0:
                    os.unlink(path)
            except OSError:
                pass

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
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()


def _move_spooled(spool: int, path: str) -> None:
    """Copy what a tiny task wrote to its log file, then empty the spool."""
    with contextlib.suppress(OSError):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            offset = 0
            while chunk := os.pread(spool, 1 << 20, offset):
                os.write(out, chunk)
                offset += len(chunk)
        finally:
            os.close(out)
    os.ftruncate(spool, 0)


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
