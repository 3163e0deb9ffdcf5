"""Process plumbing shared by the local executor's workers and services."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
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
