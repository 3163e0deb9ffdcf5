"""Step functions for the fault-injection tests (copied next to each test's workflow file)."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fanflow import runtime


def arange(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def total(values) -> int:
    return int(np.asarray(values).sum())


def blob(n: int) -> bytes:
    return bytes(range(256)) * n


def blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_file(text: str) -> Path:
    path = Path(runtime.scratch_dir()) / "notes.txt"
    path.write_text(text, encoding="utf-8")
    return path


def read_text(path) -> str:
    return Path(path).read_text(encoding="utf-8")


def big(mb: int) -> np.ndarray:
    return np.ones(mb * 2**20 // 8)


def wordy(i: int) -> str:
    return f"{i}:" + "w" * 2000


def item(i: int, marks: str, delay: float = 0.0, fail_while: str = "", fail_from: int = 0) -> int:
    """Leave a mark that this item ran; items from ``fail_from`` on fail while the file
    ``fail_while`` exists."""
    Path(marks).mkdir(parents=True, exist_ok=True)
    Path(marks, f"{i}.{os.getpid()}.{time.time_ns()}").touch()
    time.sleep(delay)
    if fail_while and i >= fail_from and Path(fail_while).exists():
        raise RuntimeError(f"item {i} is told to fail")
    return i


def collect(values: list) -> int:
    return len(values)


def spawn_tree(pid_file: str) -> None:
    """Start a child in the task's own group, a child in a session of its own, and a daemon
    (a session of its own, then its parent exits), write their pids, and wait forever."""
    daemon = (
        "import os, sys, time\n"
        "os.setsid()\n"
        "if os.fork() == 0:\n"
        "    open(sys.argv[1] + '.daemon', 'w').write(str(os.getpid())); time.sleep(1000)\n"
        "os._exit(0)\n"
    )
    subprocess.Popen([sys.executable, "-c", daemon, pid_file])
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    session = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"], start_new_session=True)
    Path(pid_file + ".worker").write_text(str(os.getpid()))
    Path(pid_file + ".plain").write_text(str(plain.pid))
    Path(pid_file + ".session").write_text(str(session.pid))
    time.sleep(1000)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)
