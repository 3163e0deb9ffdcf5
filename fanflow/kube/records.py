"""What a run on Kubernetes keeps in its artifact store so that every pod can resolve its
inputs as the engine does: the run's record (the workflow and its parameters, written once
by the first pod) and one record per task (its inputs and its output, or its error).

Argo then carries no values at all, only the run's name, branch numbers and decisions; a
value a step reads is the exact JSON an earlier pod wrote. The records live beside the
store's objects::

    <store>/runs/<run>/run.json
    <store>/runs/<run>/tasks/<task>.json

A retried task's last attempt overwrites its record. Large values are never in a record:
a manifest holds artifact references, and the artifacts stay in ``objects/``.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from fanflow.kube.names import file_key
from fanflow.spec.model import Workflow

SUCCEEDED, FAILED = "succeeded", "failed"


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    """The workflow as plain JSON that validates back to the same workflow (defaults left out)."""
    return workflow.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class RecordError(RuntimeError):
    """A record is missing or unreadable."""


class RunRecords:
    def __init__(self, artifacts: str, run_id: str):
        import fsspec

        self.url = artifacts
        self.run_id = run_id
        self._fs, root = fsspec.core.url_to_fs(artifacts)
        self._root = f"{root.rstrip('/')}/runs/{file_key(run_id)}"
        self._run: tuple[Workflow, dict[str, Any]] | None = None

    # -- the run ------------------------------------------------------------------------
    def save_run(self, workflow: Workflow, params: dict[str, Any]) -> None:
        self._put("run.json", {"run": self.run_id, "workflow": workflow_json(workflow), "params": params})
        self._run = (workflow, params)

    def run(self) -> tuple[Workflow, dict[str, Any]]:
        """The workflow and its parameters, as the first pod recorded them."""
        if self._run is None:
            record = self._get("run.json")
            if record is None:
                raise RecordError(
                    f"run {self.run_id!r} has no record in {self.url} (the run's first task records it)"
                )
            self._run = (Workflow.model_validate(record["workflow"]), record["params"])
        return self._run

    # -- tasks --------------------------------------------------------------------------
    def save_task(self, task: str, record: dict[str, Any]) -> None:
        self._put(f"tasks/{file_key(task)}.json", {"task": task, **record})

    def task(self, name: str) -> dict[str, Any] | None:
        return self._get(f"tasks/{file_key(name)}.json")

    def tasks(self, names: list[str]) -> dict[str, dict[str, Any] | None]:
        """The records of several tasks at once (None for a task that left none)."""
        paths = {f"{self._root}/tasks/{file_key(n)}.json": n for n in names}
        if not paths:
            return {}
        found = self._fs.cat(list(paths), on_error="omit")
        return {
            name: self._decode(found[path], path) if path in found else None for path, name in paths.items()
        }

    # -- storage ------------------------------------------------------------------------
    def _put(self, relative: str, record: dict[str, Any]) -> None:
        path = f"{self._root}/{relative}"
        data = json.dumps(record).encode()
        if getattr(self._fs, "local_file", False):
            # A folder: write beside, then rename, so a reader never sees half a record.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.part"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self._fs.pipe_file(path, data)  # object stores show a put only once it is complete

    def _get(self, relative: str) -> dict[str, Any] | None:
        path = f"{self._root}/{relative}"
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError:
            return None
        return self._decode(data, path)

    @staticmethod
    def _decode(data: bytes, path: str) -> dict[str, Any]:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RecordError(f"{path}: not a record ({exc})") from None
