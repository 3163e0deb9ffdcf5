"""A module's outline: the names its top level binds, and what each is (a function and its
parameters, a class, a plain value), read from its source without running it.

Parsing a large module takes milliseconds, and ``fanflow validate`` reads every module a
workflow's steps live in, so an outline is kept on disk the way Python keeps bytecode: keyed
by the source's path, size and modification time, rebuilt when any of them changes, and
ignored when it cannot be read or written."""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when what an outline holds changes

_LITERALS = {
    ast.List: "a list", ast.ListComp: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict",
    ast.DictComp: "a dict", ast.Set: "a set", ast.SetComp: "a set", ast.JoinedStr: "text",
}


@dataclass(frozen=True)
class Binding:
    """The last top-level statement that binds a name."""

    literal: str | None = None  # "a list", "an int"...: plainly not callable
    function: bool = False  # a plain (undecorated) function
    parameters: tuple[tuple[str, Any, bool], ...] = ()  # (name, inspect kind, has a default)


@dataclass(frozen=True)
class Outline:
    bindings: dict[str, Binding]
    dynamic: bool  # `from x import *` or a module __getattr__: names the source does not show


def outline(origin: str) -> Outline:
    """The outline of the module at ``origin``, from the cache when its source is unchanged."""
    stat = os.stat(origin)
    return _outline(origin, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _outline(origin: str, mtime_ns: int, size: int) -> Outline:
    key = {"format": FORMAT, "source": origin, "mtime_ns": mtime_ns, "size": size}
    cached = _cache_file(origin)
    try:
        stored = json.loads(cached.read_text(encoding="utf-8"))
        if stored["key"] == key:
            return _from_json(stored["outline"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # absent, stale or damaged: read the source
    found = from_source(Path(origin).read_text(encoding="utf-8"))
    _store(cached, {"key": key, "outline": _to_json(found)})
    return found


def from_source(source: str) -> Outline:
    tree = ast.parse(source)
    bindings = {}
    for node in tree.body:
        for name in _names_bound(node):
            bindings[name] = _binding(node)
    dynamic = any(
        (isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names))
        or (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")
        for node in tree.body
    )
    return Outline(bindings, dynamic)


def _names_bound(node) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    return set()


def _binding(node) -> Binding:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.decorator_list:
        return Binding(function=True, parameters=tuple(_parameters(node.args)))
    value = getattr(node, "value", None) if isinstance(node, ast.Assign | ast.AnnAssign) else None
    if isinstance(value, ast.Constant):
        return Binding(literal="None" if value.value is None else f"a {type(value.value).__name__}")
    return Binding(literal=_LITERALS.get(type(value)))


def _parameters(args: ast.arguments) -> list[tuple[str, Any, bool]]:
    """(name, kind, has a default) of each parameter, as inspect.Parameter would say."""
    kind = inspect.Parameter
    positional = [(a, kind.POSITIONAL_ONLY) for a in args.posonlyargs]
    positional += [(a, kind.POSITIONAL_OR_KEYWORD) for a in args.args]
    first_default = len(positional) - len(args.defaults)
    found = [(a.arg, k, i >= first_default) for i, (a, k) in enumerate(positional)]
    if args.vararg:
        found.append((args.vararg.arg, kind.VAR_POSITIONAL, True))
    found += [(a.arg, kind.KEYWORD_ONLY, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg:
        found.append((args.kwarg.arg, kind.VAR_KEYWORD, True))
    return found


def _to_json(found: Outline) -> dict:
    return {
        "dynamic": found.dynamic,
        "bindings": {
            name: [b.literal, b.function, [[n, k.name, d] for n, k, d in b.parameters]]
            for name, b in found.bindings.items()
        },
    }


def _from_json(data: dict) -> Outline:
    kinds = inspect.Parameter
    bindings = {
        name: Binding(literal, bool(function), tuple((n, getattr(kinds, k), bool(d)) for n, k, d in parameters))
        for name, (literal, function, parameters) in data["bindings"].items()
    }
    return Outline(bindings, bool(data["dynamic"]))


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fanflow" / "outlines"


def _cache_file(origin: str) -> Path:
    return cache_folder() / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.json"


def _store(path: Path, data: dict) -> None:
    """Write whole or not at all; a cache that cannot be written only costs the next parse."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
