"""Importing the object that a ``package.module:attribute`` string names.

Code that no worker could import by name (a step defined in a notebook cell, or in the
script being run as ``__main__``) is shipped instead: its source is stored in the artifact
store, content-addressed, and its module is named after the digest,
``fanflow.shipped.sha256_<hex>``. Importing such a name reads the source through a reader
the caller supplies (one that checks the bytes against the digest) and runs it as a fresh
module; nothing but source text ever travels."""

from __future__ import annotations

import importlib
import linecache
import sys
import types
from collections.abc import Callable
from typing import Any

SHIPPED_PACKAGE = "fanflow.shipped"
_SHIPPED_PREFIX = SHIPPED_PACKAGE + ".sha256_"
_HEX = frozenset("0123456789abcdef")


class ImportFailed(Exception):
    """The module cannot be imported, or has no such attribute."""


def shipped_module(digest: str) -> str:
    """The module name of shipped code with this digest (``sha256:<hex>``)."""
    return _SHIPPED_PREFIX + digest.removeprefix("sha256:")


def shipped_digest(target: str) -> str | None:
    """The digest of the shipped code a module name (or ``module:object``) names, or None."""
    module = target.partition(":")[0]
    hex_part = module.removeprefix(_SHIPPED_PREFIX)
    if hex_part == module or len(hex_part) != 64 or not set(hex_part) <= _HEX:
        return None
    return "sha256:" + hex_part


def import_object(
    target: str, import_paths: list[str] = (), read_shipped: Callable[[str], str] | None = None
) -> Any:
    """The object that ``package.module:attribute`` names; ``import_paths`` (a workflow's
    folder) go first on ``sys.path`` so the workflow's own modules are found;
    ``read_shipped(digest)`` gives the source of shipped code."""
    for folder in import_paths:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module_name, _, attribute = target.partition(":")
    try:
        digest = shipped_digest(module_name)
        if digest is not None:
            found = _shipped(module_name, digest, read_shipped)
        else:
            found = importlib.import_module(module_name)
    except ImportFailed:
        raise
    except Exception as exc:
        raise ImportFailed(
            f"cannot import {module_name!r} for {target}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ImportFailed(f"module {module_name!r} has no {attribute!r}")
        found = getattr(found, part)
    return found


def _shipped(name: str, digest: str, read_shipped: Callable[[str], str] | None) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    if read_shipped is None:
        raise ImportFailed(f"{name} is shipped code, and nothing here can read it")
    source = read_shipped(digest)
    filename = f"<shipped code {digest[:19]}…>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module  # before running it: dataclasses look their module up
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class LazyModule:
    """A module imported when one of its attributes is first read: for a heavy dependency
    that only some paths through a module need (SQLAlchemy, for a run store that is not the
    default SQLite file)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)
