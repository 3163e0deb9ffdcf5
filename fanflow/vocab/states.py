"""Task states and the events that record every change of state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"  # failed, waiting for its backoff before the next attempt
    SERVING = "serving"  # a service that is up and answering
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.SKIPPED, State.CANCELLED})
OK = frozenset({State.SUCCEEDED, State.SERVING})


@dataclass(slots=True)
class Event:
    """One change of a task's state, recorded before the engine acts on it."""

    task: str
    step: str
    state: State
    attempt: int
    time: float
    detail: dict[str, Any] = field(default_factory=dict)
