"""What a running task may ask about the place it runs in.

The executor sets these environment variables before calling a step function, so a step
(or a library it calls) can size itself to what the scheduler gave it, on any backend.
"""

from __future__ import annotations

import contextvars
import os

CPUS_ENV = "FANFLOW_CPUS"
GPUS_ENV = "FANFLOW_GPUS"
TASK_ENV = "FANFLOW_TASK"
RUN_ENV = "FANFLOW_RUN"
SCRATCH_ENV = "FANFLOW_SCRATCH"

# A task run on a thread of the engine's process cannot own the process's environment (other
# tasks share it), so the values are also kept per thread here; they win over the environment.
_TASK_VALUES: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "fanflow_task", default=None
)


def set_task_values(values: dict[str, str]) -> contextvars.Token:
    """Set the current thread's task values (``{CPUS_ENV: "2", ...}``); the token undoes it."""
    return _TASK_VALUES.set(dict(values))


def reset_task_values(token: contextvars.Token) -> None:
    """The task is over: the thread's values are what they were before it."""
    _TASK_VALUES.reset(token)


def _get(name: str) -> str | None:
    values = _TASK_VALUES.get()
    if values is not None and name in values:
        return values[name]
    return os.environ.get(name)


def cpus() -> int:
    """Cores granted to the current task (all of the machine's outside a task)."""
    value = _get(CPUS_ENV)
    if value:
        return max(1, int(float(value)))
    return os.cpu_count() or 1


def gpus() -> int:
    """GPUs granted to the current task (0 outside a task)."""
    return int(_get(GPUS_ENV) or 0)


def task_name() -> str | None:
    """The running task's name, e.g. ``train[model=cnn]``, or None outside a task."""
    return _get(TASK_ENV)


def run_id() -> str | None:
    return _get(RUN_ENV)


# Service steps (long-running tasks such as model servers) tell the executor where they can
# be reached by calling ``announce`` once they are ready to answer. The executor passes the
# path of a file to write through the environment, which works the same for a local
# process, a Ray worker or a pod.
READY_FILE_ENV = "FANFLOW_SERVICE_READY_FILE"
PORT_ENV = "FANFLOW_SERVICE_PORT"


def service_port() -> int:
    """The port a service should bind: 0 (pick a free one) unless it is being restarted."""
    return int(os.environ.get(PORT_ENV, "0") or 0)


def announce(endpoint: dict) -> None:
    """Report that this service is ready, and how to reach it (e.g. ``{"url": ...}``)."""
    import json

    payload = json.dumps(endpoint, sort_keys=True)
    path = os.environ.get(READY_FILE_ENV)
    if not path:
        print(f"fanflow: service ready {payload}", flush=True)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(payload)
    os.replace(tmp, path)


def scratch_dir() -> os.PathLike[str]:
    """A private folder for the current task's files, removed after the task. Files a step
    returns from here are moved (not copied) into the artifact store."""
    import pathlib
    import tempfile

    path = _get(SCRATCH_ENV)
    if path:
        p = pathlib.Path(path)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return pathlib.Path(tempfile.mkdtemp(prefix="fanflow-"))
