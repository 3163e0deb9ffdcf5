"""Process plumbing shared by the local executor's workers and services."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
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
    processes are captured too) to one task attempt's log files, and to /dev/null between
    tasks. Empty log files are removed afterwards."""

    def __init__(self):
        self._null = os.open(os.devnull, os.O_WRONLY)
        self._paths: tuple[str, str] | None = None

    def idle(self) -> None:
        self._flush()
        os.dup2(self._null, 1)
        os.dup2(self._null, 2)

    def begin(self, prefix: str | None) -> None:
        if prefix is None:
            self.idle()
            return
        self._flush()
        self._paths = (prefix + ".out", prefix + ".err")
        for fd, path in zip((1, 2), self._paths, strict=True):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)

    def end(self) -> None:
        self.idle()
        if self._paths:
            for path in self._paths:
                try:
                    if os.path.getsize(path) == 0:
                        os.unlink(path)
                except OSError:
                    pass
            self._paths = None

    @staticmethod
    def _flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()


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
