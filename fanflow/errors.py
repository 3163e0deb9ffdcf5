"""What fanflow raises to its users, beside ``SpecError`` (a workflow or parameters that cannot
run as written): a run that cannot be found, and a run that did not succeed. The command line
maps them to exit codes: 2 for the first two, 1 for a failed run, 130 for a cancelled one."""

from __future__ import annotations

from typing import Any

# The run store resolves run ids (an id, a unique prefix, `latest`), so its errors live there.
from fanflow.stores.errors import AmbiguousRun, RunNotFound

__all__ = ["AmbiguousRun", "RunFailed", "RunNotFound"]


class RunFailed(Exception):
    """A run ended failed or cancelled; ``run`` is the Run, to inspect its tasks."""

    def __init__(self, run: Any):
        self.run = run
        super().__init__(f"run {run.id} {run.state}" + (f": {run.error}" if run.error else ""))
