"""Cache keys, and the memo that lets a task reuse an earlier identical task's outputs.

A task's key hashes the step's code (the source of the module its function lives in), its
resolved inputs (plain values and the content hashes of input artifacts) and the names of
any code its inputs point to (``package.module:object`` strings contribute that module's
source). Change one of those and the task runs again; change nothing and it is reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from typing import Any

from fanflow.engine.core import Task
from fanflow.executors.base import TaskSpec
from fanflow.spec.validate import importable_from

_CODE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class CodeHasher:
    def __init__(self, source: str | None = None, import_paths: list[str] = ()):
        self.source = source
        self.import_paths = list(import_paths)
        self._modules: dict[str, str] = {}

    def module(self, name: str) -> str:
        digest = self._modules.get(name)
        if digest is None:
            digest = self._modules[name] = self._hash_module(name)
        return digest

    def _hash_module(self, name: str) -> str:
        try:
            with importable_from(self.source, self.import_paths):
                spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not spec.has_location:
            return "unknown:" + name
        try:
            with open(spec.origin, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return "unreadable:" + name

    def for_task(self, uses: str, inputs: Any) -> str:
        parts = [uses, self.module(uses.partition(":")[0])]
        for text in sorted(_code_strings(inputs)):
            parts.append(f"{text}={self.module(text.partition(':')[0])}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _code_strings(value: Any):
    if isinstance(value, str):
        if _CODE_REF.match(value):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _code_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _code_strings(v)


def cache_key(code: str, inputs: Any, resources: dict[str, Any] | None = None) -> str:
    payload = json.dumps(
        {"code": code, "inputs": inputs, "resources": resources},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


class StoreMemo:
    """Reuses outputs from the run store's cache and, on resume, from the run resumed."""

    def __init__(
        self,
        store,
        *,
        use_cache: bool = True,
        previous: dict[str, dict] | None = None,
        source: str | None = None,
        no_cache_steps: set[str] | None = None,
        import_paths: list[str] = (),
    ):
        self.store = store
        self.use_cache = use_cache
        self.previous = previous or {}  # task name -> {"cache_key", "output"} of the resumed run
        self.code = CodeHasher(source, import_paths)
        self.no_cache_steps = no_cache_steps or set()
        self.keys: dict[str, str] = {}

    @property
    def active(self) -> bool:
        return self.use_cache or bool(self.previous)

    def key(self, task: Task, spec: TaskSpec) -> str:
        key = self.keys.get(task.name)
        if key is None:
            key = cache_key(self.code.for_task(spec.uses, spec.inputs), spec.inputs, {"gpus": spec.gpus})
            self.keys[task.name] = key
        return key

    def lookup_many(self, batch: list[tuple[Task, TaskSpec]]) -> dict[str, Any]:
        """Outputs that tasks of ``batch`` can reuse, by task name."""
        found: dict[str, Any] = {}
        wanted: dict[str, list[str]] = {}
        for task, spec in batch:
            if spec.kind == "service":
                continue
            key = self.key(task, spec)
            earlier = self.previous.get(task.name)
            if earlier and earlier.get("cache_key") == key:
                found[task.name] = earlier["output"]
            elif self.use_cache and task.step not in self.no_cache_steps:
                wanted.setdefault(key, []).append(task.name)
        if wanted:
            for key, output in self.store.cached_outputs(wanted).items():
                for name in wanted[key]:
                    found[name] = output
        return found
