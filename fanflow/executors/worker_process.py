"""A local worker process: ``python -m fanflow.executors.worker_process FD NAME``.

It runs task after task sent over the inherited socket ``FD`` until told to stop. It is
started as a plain program (not through multiprocessing's spawn), so it never re-imports the
caller's main script."""

from __future__ import annotations

import signal
import socket
import sys
from multiprocessing.connection import Connection

from fanflow.executors.base import TaskSpec
from fanflow.executors.processes import OutputCapture, die_with_parent
from fanflow.executors.worker import execute


def main(fd: int, name: str) -> int:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides about Ctrl-C
    conn = Connection(socket.socket(fileno=fd).detach())
    capture = OutputCapture()
    capture.idle()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0
        if message is None:
            return 0
        for item in message if isinstance(message, list) else [message]:
            spec = TaskSpec(**item)
            capture.begin(spec.log_prefix)
            try:
                result = execute(spec, worker=name)
            finally:
                capture.end()
            try:
                conn.send(result.__dict__)
            except (OSError, ValueError):
                return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
