"""A local worker process: ``python -m fanflow.executors.worker_process FD NAME PROGRESS_FD``.

It runs task after task sent over the inherited socket ``FD`` until told to stop. It is
started as a plain program (not through multiprocessing's spawn), so it never re-imports the
caller's main script. A message holds the shared part of any step it has not seen yet and a
batch of tasks; results go back in batches too, at least every ``SEND_EVERY`` seconds, so
that the engine can record them and hand out more while the rest of the batch runs. A step's
progress reports go back on the same socket as they come (a few a second at most: see
``fanflow.reporting``)."""

from __future__ import annotations

import gc
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection

from fanflow.executors.processes import OutputCapture, Progress, guard_task_tree
from fanflow.executors.wire import REPORT, result_row, spec_from
from fanflow.executors.worker import execute

SEND_EVERY = 0.002  # seconds
WATCH_EVERY = 0.5  # seconds between two looks at how long a spooled task has been running


def main(fd: int, name: str, progress_fd: int) -> int:
    guard_task_tree()  # a task's child processes die with it, and with the engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides about Ctrl-C
    conn = Connection(socket.socket(fileno=fd).detach())
    sending = threading.Lock()  # results go from this thread, reports from any of the step's

    def report(task: str, attempt: int, message: dict) -> None:
        with sending:
            conn.send((REPORT, task, attempt, message))

    capture = OutputCapture()
    capture.idle()
    threading.Thread(target=_watch, args=(capture,), name="fanflow-output", daemon=True).start()
    progress = Progress(progress_fd)
    begun = 0
    steps: dict[int, dict] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0
        if message is None:
            return 0
        shared, batch = message
        steps.update(shared)
        done: list[tuple] = []
        sent = time.monotonic()
        for own in batch:
            spec = spec_from(steps[own[0]], own)
            # Results wait for company only behind tiny tasks, and only a moment.
            if done and (not spec.light or time.monotonic() - sent >= SEND_EVERY):
                if not _send(conn, done, sending):
                    return 0
                done, sent = [], time.monotonic()
            begun += 1
            progress.begun(begun)
            capture.begin(spec.log_prefix, spool=spec.light)
            try:
                result = execute(spec, worker=name, send=report)
            finally:
                capture.end()
            done.append(result_row(result))
        capture.idle()
        if done and not _send(conn, done, sending):
            return 0


def _send(conn: Connection, results: list[tuple], sending: threading.Lock) -> bool:
    try:
        with sending:
            conn.send(results)
    except (OSError, ValueError):
        return False
    return True


def _watch(capture: OutputCapture) -> None:
    """A tiny task's output is spooled and copied to its files when it ends; one that runs
    for a while after all has it written to its files from then on, to be followed."""
    while True:
        time.sleep(WATCH_EVERY)
        capture.unspool_if_long()


if __name__ == "__main__":
    code = main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
    # The process ends now: its objects need no scan for cycles on the way out. Without this
    # the interpreter's last collections made a worker take 15 to 40 ms to exit once told to
    # stop, time that a run's end waits for. (atexit handlers still run.)
    gc.freeze()
    sys.exit(code)
