"""What can go wrong with a store, as errors that say what happened and what to do next."""

from __future__ import annotations


class RunStoreError(RuntimeError):
    """The run store cannot be used as it is (damaged, full, or not a run store at all)."""


class RunLeased(RunStoreError):
    """Another live engine owns the run."""


class RunNotFound(LookupError):
    """No run matches the id or prefix given."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


class AmbiguousRun(RunNotFound):
    """A prefix that matches several runs; ``candidates`` lists them, newest first."""

    def __init__(self, message: str, candidates: list[str]):
        super().__init__(message)
        self.candidates = candidates
