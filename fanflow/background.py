"""Runs started in the background: each in its own process, so that whoever started it (a
web page, a notebook) goes on while it runs, and can cancel it.

    launched = start("workflow.yaml", params={"n": "5"})    # checked here, then a process
    launched.run_id                                          # recorded in the store already
    cancel(launched.run_id)                                  # or launched.cancel()

The workflow and its parameters are checked before anything starts, by the same code as
``fanflow run`` (a ``SpecError`` names every problem). The child process runs the workflow on
the project's store under the run id chosen here; its own output goes to ``engine.log`` in
the run's log folder. ``start(resume=RUN)`` continues a run as ``fanflow resume`` does;
``start(serve=RUN)`` brings a finished run's services back up as ``fanflow serve`` does and
keeps them up until cancelled. ``cancel`` stops any live run of the project that runs on this
machine (one started here, by ``fanflow run`` in a terminal, ...), as Ctrl-C would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanflow.errors import RunNotFound
from fanflow.history import log_folder
from fanflow.project import Project
from fanflow.spec.errors import SpecError, SpecIssue

ENGINE_LOG = "engine.log"
STARTUP_TIMEOUT = 120.0  # seconds for the child to record its run (imports on a busy machine)


class LaunchError(RuntimeError):
    """The background process could not start the run; the message holds its last output."""


@dataclass
class Launched:
    """A run going on in a child process."""

    run_id: str
    process: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def cancel(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)


def start(
    workflow: str | os.PathLike | None = None,
    *,
    params: dict[str, Any] | None = None,
    resume: str | None = None,
    serve: str | None = None,
    cache: bool = True,
    executor: str = "local",
    home: str | os.PathLike | None = None,
) -> Launched:
    """Start a run in a child process and return once the run store holds it.

    Exactly one of ``workflow`` (a file, a bundle or an installed workflow's name, with its
    ``params``), ``resume`` (a run to continue) or ``serve`` (a run whose services to bring
    back up) is given."""
    from fanflow.engine.plan import Plan
    from fanflow.engine.runner import new_run_id
    from fanflow.spec.loader import load_workflow

    if sum(x is not None for x in (workflow, resume, serve)) != 1:
        raise ValueError("start: give exactly one of workflow, resume or serve")
    project = Project(home)
    try:
        job: dict[str, Any] = {"home": str(project.home), "cache": cache, "executor": executor}
        if workflow is not None:
            path = project.locate(workflow).path
            spec = load_workflow(path)
            job.update(workflow=str(path), params=Plan.build(spec, params or {}).params)
        elif resume is not None:
            job["resume"] = project.resumable(resume)[2]
        else:
            job["serve"] = project.servable(serve)[2]
        job["run_id"] = new_run_id()
        log = log_folder(project.home, job["run_id"]) / ENGINE_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "fanflow.background", json.dumps(job, default=str)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        launched = Launched(job["run_id"], process, log)
        _wait_recorded(project, launched)
        return launched
    finally:
        project.close()


def _wait_recorded(project: Project, launched: Launched) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while project.store.get_run(launched.run_id) is None:
        if not launched.alive():
            tail = launched.log.read_text(encoding="utf-8", errors="replace")[-2000:].strip()
            raise LaunchError(f"the run did not start (exit code {launched.process.returncode}): {tail}")
        if time.monotonic() > deadline:
            launched.process.kill()
            raise LaunchError(f"the run did not start within {STARTUP_TIMEOUT:g}s (see {launched.log})")
        time.sleep(0.05)


def cancel(run_id: str, *, home: str | os.PathLike | None = None) -> None:
    """Stop a live run as Ctrl-C would: its tasks are cancelled and the run ends "cancelled".

    Works for a run whose engine runs on this machine; ``RunNotFound`` for an unknown run,
    ``SpecError`` for one that is not running or runs elsewhere."""
    project = Project(home)
    try:
        row = project.get_run(run_id)
    finally:
        project.close()
    if row.state != "running":
        raise SpecError(SpecIssue(f"run {row.id} is not running (it is {row.state})"))
    if row.host != socket.gethostname() or not row.pid:
        raise SpecError(SpecIssue(f"run {row.id} runs on {row.host}: cancel it there"))
    try:
        os.kill(row.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise RunNotFound(f"run {row.id}: its engine (pid {row.pid}) is gone") from None


# -- the child process ----------------------------------------------------------------------
def _run(job: dict[str, Any]) -> int:
    from fanflow.spec.loader import load_workflow

    project = Project(job["home"])
    serving = "serve" in job
    if "workflow" in job:
        spec, params, previous = load_workflow(job["workflow"]), job["params"], None
    elif "resume" in job:
        spec, params, previous = project.resumable(job["resume"])
    else:
        spec, params, previous = project.servable(job["serve"])
    runner = project.runner(spec, params=params, executor=job["executor"], cache=job["cache"],
                            keep_services=serving, resume=previous, run_id=job["run_id"])
    result = runner.run()
    print(f"run {result.run_id} {result.state}" + (f": {result.error}" if result.error else ""), flush=True)
    if serving and result.state == "succeeded":
        for name, endpoint in result.services.items():
            print(f"serving {name}: {endpoint.get('url') if isinstance(endpoint, dict) else endpoint}", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        runner.supervise(stop)
        runner.stop_services()
    project.close()
    return 0 if result.state == "succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    job = json.loads((argv or sys.argv[1:])[0])
    with contextlib.suppress(KeyboardInterrupt):
        return _run(job)
    return 130


if __name__ == "__main__":
    sys.exit(main())
