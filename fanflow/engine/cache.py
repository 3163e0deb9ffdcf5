"""Cache keys, and the memo that lets a task reuse an earlier identical task's outputs.

A task's key hashes its step's code, its resolved inputs (plain values and the content hashes
of input artifacts) and the GPUs it was given. The code of a step (``CodeHasher``) is read
from the source with ``ast``, never by running it:

- the step function's own definition, normalised: its syntax tree, so comments, blank
  lines and formatting do not count (docstrings do); its decorators do not count either
  (they declare the step, and what they declare is in the spec);
- every top-level definition of its module that it uses by name, transitively (helper
  functions, classes, constants, the import statements of the names it uses), normalised the
  same way; a name that a default argument uses to point to another step of the workflow
  (``values=square.all()``) does not count, since that step's output is an input;
- the project modules those imports name, whole and normalised, and the modules they import
  in turn, transitively (a package's ``__init__`` counts for its modules);
- for a module installed in site-packages, its distribution's name and version instead of
  its source; the standard library does not count.

``package.module:object`` strings among the inputs (a model named by its function) count
the same way as the object they name. Change one of those and the task runs again; change
nothing else (a comment, another step's function, an unrelated module) and it is reused.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanflow.executors.base import TaskSpec
from fanflow.vocab import modules
from fanflow.vocab.imports import shipped_digest
from fanflow.vocab.manifest import ARTIFACT_KEY, artifact_refs

_CODE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class _Module:
    fingerprint: str | None  # what stands for the module in a key; None: does not count
    tree: ast.Module | None = None  # the project's own modules only
    is_package: bool = False
    imports: tuple[tuple[str, bool], ...] = ()  # (module, certain) as modules.imported gives


class CodeHasher:
    """The code fingerprint of step functions, by the rules in this module's docstring.

    ``shipped`` holds the source of code shipped through the artifact store (steps defined
    in a notebook), by digest; ``steps`` the ``uses`` of the workflow's steps."""

    def __init__(
        self,
        source: str | None = None,
        import_paths: list[str] = (),
        *,
        shipped: Mapping[str, str] | None = None,
        steps: set[str] = frozenset(),
    ):
        folders = [str(Path(source).resolve().parent)] if source else []
        self.path = folders + [f for f in import_paths if f not in folders]
        self.shipped = dict(shipped or {})
        self.steps = set(steps)
        self._modules: dict[str, _Module | None] = {}
        self._functions: dict[str, str] = {}
        self._tasks: dict[tuple[str, tuple[str, ...]], str] = {}  # (uses, code named in inputs) -> digest

    def for_task(self, uses: str, inputs: Any) -> str:
        named = tuple(sorted(_code_strings(inputs)))
        digest = self._tasks.get((uses, named))
        if digest is None:  # the tasks of a step mostly name the same code: hashed once
            parts = [uses, self.function(uses)]
            for text in named:
                parts.append(f"{text}={self.function(text)}")
            digest = self._tasks[uses, named] = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return digest

    def function(self, target: str) -> str:
        """The fingerprint of ``module:object`` and everything it needs."""
        digest = self._functions.get(target)
        if digest is None:
            digest = self._functions[target] = self._function(target)
        return digest

    def _function(self, target: str) -> str:
        module_name, _, qualname = target.partition(":")
        module = self.module(module_name)
        if module is None:
            return f"missing:{module_name}"
        if module.tree is None:
            return module.fingerprint or "stdlib"
        others = {
            uses.partition(":")[2].split(".")[0]
            for uses in self.steps
            if uses.partition(":")[0] == module_name and uses != target
        }
        nodes, used = _own_code(module.tree, qualname.split(".")[0], others)
        if nodes is None:  # not defined by name in the module: the whole module counts
            return self._closure([(module_name, True)])
        imports = modules.imported(ast.Module(body=used, type_ignores=[]), module_name, module.is_package)
        parts = [ast.dump(node) for node in nodes]
        parts.append(self._closure(imports + _parents(module_name)))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _closure(self, start: list[tuple[str, bool]]) -> str:
        """One fingerprint for the modules ``start`` names and all they import, transitively."""
        found: set[str] = set()
        seen: set[str] = set()
        queue = list(start)
        while queue:
            name, certain = queue.pop()
            if name in seen:
                continue
            seen.add(name)
            module = self.module(name)
            if module is None:
                if certain:
                    found.add(f"{name}=missing")
                continue
            if module.fingerprint:
                found.add(module.fingerprint if module.tree is None else f"{name}={module.fingerprint}")
            queue += module.imports
        return hashlib.sha256("\n".join(sorted(found)).encode()).hexdigest()

    def module(self, name: str) -> _Module | None:
        if name not in self._modules:
            self._modules[name] = self._read(name)
        return self._modules[name]

    def _read(self, name: str) -> _Module | None:
        digest = shipped_digest(name)
        if digest is not None:
            text = self.shipped.get(digest)
            return None if text is None else _from_source(name, text, is_package=False)
        if modules.is_stdlib(name):
            return _Module(None)
        top = name.split(".")[0]
        if top != name:  # an installed package's modules all count as the package
            package = self.module(top)
            if package is None or package.tree is None:
                return package
        found = modules.find(name, self.path + sys.path)
        if found is None:
            return None
        if modules.is_installed(found.origin):
            return _Module("installed:" + (",".join(modules.distribution_versions(top)) or top))
        if found.origin is None:  # a namespace package: its modules count, it has no code
            return _Module(None, ast.Module(body=[], type_ignores=[]), True, tuple(_parents(name)))
        path = Path(found.origin)
        try:
            stat = path.stat()
            seen = (name, str(path), stat.st_mtime_ns, stat.st_size)
            if seen not in _READ:
                if path.suffix != ".py":
                    _READ[seen] = _Module("file:" + hashlib.sha256(path.read_bytes()).hexdigest())
                else:
                    _READ[seen] = _from_source(name, path.read_text(encoding="utf-8"), found.is_package)
            return _READ[seen]
        except (OSError, UnicodeDecodeError):
            return _Module(f"unreadable:{name}")


# Modules already read by this process, by file and its modification time and size: a
# notebook that runs its flow again reads only what changed.
_READ: dict[tuple[str, str, int, int], _Module] = {}


def _from_source(name: str, text: str, is_package: bool) -> _Module:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return _Module("text:" + hashlib.sha256(text.encode()).hexdigest())
    fingerprint = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
    imports = modules.imported(tree, name, is_package) + _parents(name)
    return _Module(fingerprint, tree, is_package, tuple(imports))


def _parents(name: str) -> list[tuple[str, bool]]:
    """The packages whose ``__init__`` runs before ``name`` is imported."""
    parts = name.split(".")
    return [(".".join(parts[:i]), True) for i in range(1, len(parts))]


def _own_code(tree: ast.Module, name: str, other_steps: set[str]):
    """The top-level statements that define ``name`` (decorators left out) and those they
    use by name, transitively, in module order; and the statements whose imports count.
    (None, None) when nothing at the top level defines ``name``."""
    bindings: dict[str, list[int]] = {}
    stars = []
    for index, statement in enumerate(tree.body):
        for bound in _bound_names(statement):
            bindings.setdefault(bound, []).append(index)
        if isinstance(statement, ast.ImportFrom) and any(a.name == "*" for a in statement.names):
            stars.append(index)
    if name not in bindings:
        return None, None
    chosen: dict[int, ast.stmt] = {}
    queue = [name]
    seen: set[str] = set()
    while queue:
        current = queue.pop()
        if current in seen:
            continue
        seen.add(current)
        for index in bindings.get(current, []):
            if index in chosen:
                continue
            statement = tree.body[index]
            if current == name:
                statement, used = _without_decorators(statement, other_steps)
            else:
                used = _names(statement)
            chosen[index] = statement
            queue += [n for n in used if n in bindings or stars]
    for index in stars:
        chosen.setdefault(index, tree.body[index])
    ordered = [chosen[i] for i in sorted(chosen)]
    return ordered, ordered


def _without_decorators(statement: ast.stmt, other_steps: set[str]) -> tuple[ast.stmt, set[str]]:
    if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return statement, _names(statement)
    bare = type(statement)(**{**{f: getattr(statement, f) for f in statement._fields}, "decorator_list": []})
    used = _names(bare)
    if not isinstance(statement, ast.ClassDef):
        defaults = [*statement.args.defaults, *(d for d in statement.args.kw_defaults if d is not None)]
        in_defaults = set().union(*(_names(d) for d in defaults)) if defaults else set()
        body = set().union(*(_names(s) for s in statement.body))
        used -= (in_defaults & other_steps) - body
    return bare, used


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _bound_names(statement: ast.stmt) -> set[str]:
    """The module-level names a top-level statement binds."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    if isinstance(statement, ast.Import):
        return {(a.asname or a.name).split(".")[0] for a in statement.names}
    if isinstance(statement, ast.ImportFrom):
        return {a.asname or a.name for a in statement.names if a.name != "*"}
    found: set[str] = set()
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            found |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    return found


def _code_strings(value: Any, found: list[str] | None = None) -> list[str]:
    """The ``module:object`` strings in a nested value."""
    found = [] if found is None else found
    if isinstance(value, str):
        if _CODE_REF.match(value):
            found.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            if not isinstance(v, int | float):
                _code_strings(v, found)
    elif isinstance(value, list):
        for v in value:
            if not isinstance(v, int | float):
                _code_strings(v, found)
    return found


_encode_key = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode  # made once


def cache_key(code: str, inputs: Any, resources: dict[str, Any] | None = None) -> str:
    payload = _encode_key({"code": code, "inputs": inputs, "resources": resources})
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


class StoreMemo:
    """Reuses outputs from the run store's cache and, on resume, from the run resumed.

    The runner asks for each task's key once (when the task becomes ready) and looks up the
    tasks that became ready together in one batch."""

    def __init__(
        self,
        store,
        *,
        use_cache: bool = True,
        previous: dict[str, dict] | None = None,
        code: CodeHasher | None = None,
        no_cache_steps: set[str] | None = None,
        artifacts=None,
    ):
        self.store = store
        self.artifacts = artifacts  # checks that reused outputs' objects are there and intact
        self.use_cache = use_cache
        self.previous = previous or {}  # task name -> {"cache_key", "output"} of the resumed run
        self.code = code or CodeHasher()
        self.no_cache_steps = no_cache_steps or set()
        self.reasons: dict[str, str] = {}  # task -> why an earlier output was not reused
        self._verdicts: dict[str, str | None] = {}

    @property
    def active(self) -> bool:
        return self.use_cache or bool(self.previous)

    def key(self, spec: TaskSpec) -> str:
        return cache_key(self.code.for_task(spec.uses, spec.inputs), spec.inputs, {"gpus": spec.gpus})

    def lookup(self, wanted: list[tuple[TaskSpec, str]]) -> dict[str, Any]:
        """Outputs that tasks of ``wanted`` (spec, key) can reuse, by task name."""
        found: dict[str, Any] = {}
        by_key: dict[str, list[str]] = {}
        for spec, key in wanted:
            if spec.kind == "service":
                continue
            earlier = self.previous.get(spec.task)
            if earlier and earlier.get("cache_key") == key:
                found[spec.task] = earlier["output"]
            elif self.use_cache and spec.step not in self.no_cache_steps:
                by_key.setdefault(key, []).append(spec.task)
        if by_key:
            for key, output in self.store.cached_outputs(by_key).items():
                for name in by_key[key]:
                    found[name] = output
        if self.artifacts is not None:
            for name in [n for n, output in found.items() if self._damaged(n, found[n])]:
                del found[name]
        return found

    def rerun_reason(self, task: str) -> str | None:
        """Why a task ran although an earlier output matched it (its artifacts were gone)."""
        return self.reasons.get(task)

    def _damaged(self, task: str, output: Any) -> bool:
        """An earlier output whose artifacts are missing or damaged is not reused."""
        for ref in artifact_refs(output):
            digest = ref[ARTIFACT_KEY]
            if digest not in self._verdicts:
                self._verdicts[digest] = self.artifacts.intact(digest, ref.get("suffix", ""))
            if self._verdicts[digest]:
                self.reasons[task] = f"ran again: its earlier output could not be reused ({self._verdicts[digest]})"
                return True
        return False
