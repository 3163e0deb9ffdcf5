"""The executor interface: what the engine needs from any place that runs tasks.

Everything that crosses it is plain data (JSON-serializable), and a task's inputs and outputs
are manifests whose large values live in the artifact store (named by URL), so the same
interface serves worker processes on this machine, a Ray cluster or pods on Kubernetes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["succeeded", "failed", "cancelled", "timeout", "crashed", "serving", "exited"]


@dataclass(slots=True)
class TaskSpec:
    run_id: str
    task: str  # e.g. train[model=cnn]
    step: str
    attempt: int
    uses: str  # "package.module:function"
    inputs: dict[str, Any]  # manifest: plain data and artifact references
    artifacts: str  # artifact store URL
    cpus: float = 1.0
    gpus: int = 0
    memory: int | None = None
    kind: Literal["task", "service"] = "task"
    executor: Literal["process", "thread"] = "process"
    log_prefix: str | None = None  # path prefix for this attempt's .out and .err files
    scratch: str | None = None  # folder for the task's own files, removed afterwards
    import_paths: list[str] = field(default_factory=list)  # the workflow's folder, for its modules
    service_port: int = 0  # a restarted service binds its old port again
    light: bool = False  # a tiny task that may wait in a busy worker's queue

    def to_dict(self) -> dict[str, Any]:
        # Shallow: every field is plain data already, and specs are built for each task.
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class TaskResult:
    task: str
    attempt: int
    status: Status
    output: Any = None  # manifest when succeeded; the endpoint when serving
    error: str | None = None
    traceback: str | None = None
    retryable: bool = True
    started: float | None = None
    ended: float | None = None
    report: dict[str, Any] | None = None  # the step's last progress report (fanflow.reporting)
    worker: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Executor(ABC):
    name: str = "executor"

    @abstractmethod
    def capacity(self) -> dict[str, float]:
        """What the executor can run at once: ``{"cpus", "gpus", "memory"}``."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Acquire workers; called once before the first submit."""

    @abstractmethod
    def submit(self, spec: TaskSpec) -> None:
        """Start a task. Its result comes back from ``wait``."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Send what ``submit`` may have held back, so that a batch of tasks goes out at once."""

    @abstractmethod
    def wait(self, timeout: float | None) -> list[TaskResult]:
        """Results that arrived, waiting up to ``timeout`` seconds for the first one."""

    def reports(self) -> list[tuple[str, int, dict[str, Any]]]:
        """Progress reports of running tasks (task, attempt, report) that arrived while
        waiting, oldest first; each arrived before the result of its task. A report is
        coalesced by the step's side (``fanflow.reporting``): a few a second per task."""
        return []

    @abstractmethod
    def stop(self, task: str, status: Status = "cancelled", reason: str = "") -> None:
        """Kill a running task (its children too); a result with ``status`` follows."""

    @abstractmethod
    def close(self) -> None:
        """Stop everything still running, services included, and release the workers."""
