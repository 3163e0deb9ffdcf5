"""What the local executor and its worker processes send each other, kept small: a task's
spec is split into the part its step shares with every other task of the step (sent to a
worker once) and the part of its own, and results travel as tuples, many to a message (a
list). A running task's progress report travels alone, as a tuple ``(REPORT, task, attempt,
report)``, before its result."""

from __future__ import annotations

from typing import Any

from fanflow.executors.base import TaskResult, TaskSpec

OWN = ("task", "attempt", "inputs", "log_prefix", "scratch")  # a task's own part of its spec
SHARED = tuple(name for name in TaskSpec.__slots__ if name not in OWN)
REPORT = "report"


def shared_part(spec: TaskSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in SHARED}


def own_part(template: int, spec: TaskSpec) -> tuple:
    return template, spec.task, spec.attempt, spec.inputs, spec.log_prefix, spec.scratch


def spec_from(shared: dict[str, Any], own: tuple) -> TaskSpec:
    _, task, attempt, inputs, log_prefix, scratch = own
    return TaskSpec(task=task, attempt=attempt, inputs=inputs, log_prefix=log_prefix, scratch=scratch, **shared)


def result_row(result: TaskResult) -> tuple:
    return (result.task, result.attempt, result.status, result.output, result.error, result.traceback,
            result.retryable, result.started, result.ended, result.report)


def result_from(row: tuple, worker: str) -> TaskResult:
    return TaskResult(*row, worker=worker)
