"""The body of every task, wherever it runs: import the step function, load its inputs from
the artifact store, call it, store its outputs, and report a plain-data result."""

from __future__ import annotations

import contextvars
import inspect
import os
import shutil
import sys
import time
import traceback
from typing import Any

from fanflow import reporting, runtime
from fanflow.executors.base import TaskResult, TaskSpec
from fanflow.stores.artifacts import ArtifactStore
from fanflow.stores.code import reader
from fanflow.stores.values import UnstorableValue, decode, encode
from fanflow.vocab.imports import ImportFailed, import_object

_stores: dict[str, ArtifactStore] = {}


def store_for(url: str) -> ArtifactStore:
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = ArtifactStore(url)
    return store


def import_callable(uses: str, import_paths: list[str] = (), store: ArtifactStore | None = None):
    target = import_object(uses, import_paths, reader(store) if store else None)
    if not callable(target):
        raise ImportFailed(f"{uses} is not callable")
    return target


class _StepFunction:
    """A step's function, imported once per process, and which sets of keyword arguments its
    signature takes (checked once per set of names, not once per task)."""

    __slots__ = ("fn", "module", "problems", "signature")

    def __init__(self, uses: str, import_paths: list[str], store: ArtifactStore | None):
        self.fn = import_callable(uses, import_paths, store)
        self.module = sys.modules.get(uses.partition(":")[0])
        try:
            self.signature = inspect.signature(self.fn)
        except ValueError:
            self.signature = None  # a builtin without a signature: let the call decide
        self.problems: dict[tuple, str | None] = {}

    def problem(self, names: tuple[str, ...]) -> str | None:
        if names not in self.problems:
            try:
                if self.signature is not None:
                    self.signature.bind(**dict.fromkeys(names))
                self.problems[names] = None
            except TypeError as exc:
                self.problems[names] = str(exc)
        return self.problems[names]


_functions: dict[str, _StepFunction] = {}


def step_function(uses: str, import_paths: list[str] = (), store: ArtifactStore | None = None) -> _StepFunction:
    """The step function ``uses`` names, imported again only if its module was dropped from
    ``sys.modules`` (a Ray worker does that when the workflow's code changed). Code shipped
    with the workflow is read from ``store``."""
    found = _functions.get(uses)
    if found is None or sys.modules.get(uses.partition(":")[0]) is not found.module:
        found = _functions[uses] = _StepFunction(uses, import_paths, store)
    return found


_environment: dict[str, str] = {}  # what this process last put in its environment


def set_task_environment(spec: TaskSpec, *, own_process: bool = True) -> contextvars.Token:
    """Tell the step what it was given (``fanflow.runtime``). A task with a process of its own
    also gets them in the environment (for its child processes) and its thread count set; a
    task on a thread of a shared process only in its own thread's context. The token undoes
    the thread's values once the task is over."""
    cpus = max(1, int(spec.cpus)) if spec.cpus else 1
    values = {
        runtime.CPUS_ENV: str(cpus),
        runtime.GPUS_ENV: str(spec.gpus),
        runtime.TASK_ENV: spec.task,
        runtime.RUN_ENV: spec.run_id,
        runtime.SCRATCH_ENV: spec.scratch or "",
    }
    token = runtime.set_task_values(values)
    if not own_process:
        return token
    for name, value in values.items():
        if _environment.get(name) != value or os.environ.get(name) != value:
            os.environ[name] = _environment[name] = value
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(cpus)
    torch = sys.modules.get("torch")
    if torch is not None and _environment.get("torch_threads") != str(cpus):
        torch.set_num_threads(cpus)
        _environment["torch_threads"] = str(cpus)
    return token


def call_step(spec: TaskSpec) -> tuple[Any, Any]:
    """Import, load inputs, call. Returns (function, return value)."""
    store = store_for(spec.artifacts)
    step = step_function(spec.uses, spec.import_paths, store)
    kwargs = decode(spec.inputs, store)
    problem = step.problem(tuple(kwargs))
    if problem:
        raise StepArgumentError(f"{spec.uses} cannot take the step's 'with': {problem}")
    return step.fn, step.fn(**kwargs)


class StepArgumentError(TypeError):
    pass


def execute(spec: TaskSpec, worker: str = "", *, own_process: bool = True,
            send: reporting.Send | None = None) -> TaskResult:
    """Run one task attempt in this process (on a thread of a shared process when not
    ``own_process``) and describe the outcome. The step's progress reports go to ``send``
    while it runs (a line each on stderr without one); the last goes with the result."""
    reporter = reporting.begin(spec.task, spec.attempt, send, own_process=own_process)
    try:
        result = _attempt(spec, worker, own_process)
    finally:
        report = reporting.end(reporter)
    result.report = report
    return result


def _attempt(spec: TaskSpec, worker: str, own_process: bool) -> TaskResult:
    started = time.time()
    token = set_task_environment(spec, own_process=own_process)
    try:
        _, value = call_step(spec)
        output = encode(value, store_for(spec.artifacts), where=f"{spec.task} output", scratch=spec.scratch)
    except (ImportFailed, StepArgumentError, UnstorableValue) as exc:
        return TaskResult(
            spec.task,
            spec.attempt,
            "failed",
            error=str(exc),
            retryable=False,
            traceback=traceback.format_exc(),
            started=started,
            ended=time.time(),
            worker=worker,
        )
    except BaseException as exc:  # the step's own failure, reported rather than raised
        if isinstance(exc, KeyboardInterrupt):
            raise
        return TaskResult(
            spec.task,
            spec.attempt,
            "failed",
            error=describe(exc),
            traceback=traceback.format_exc(),
            started=started,
            ended=time.time(),
            worker=worker,
        )
    finally:
        runtime.reset_task_values(token)
        if spec.scratch and os.path.lexists(spec.scratch):
            shutil.rmtree(spec.scratch, ignore_errors=True)
    return TaskResult(
        spec.task, spec.attempt, "succeeded", output=output, started=started, ended=time.time(), worker=worker
    )


def describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
