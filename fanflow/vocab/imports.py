"""Importing the object that a ``package.module:attribute`` string names."""

from __future__ import annotations

import importlib
import sys
from typing import Any


class ImportFailed(Exception):
    """The module cannot be imported, or has no such attribute."""


def import_object(target: str, import_paths: list[str] = ()) -> Any:
    """The object that ``package.module:attribute`` names; ``import_paths`` (a workflow's
    folder) go first on ``sys.path`` so the workflow's own modules are found."""
    for folder in import_paths:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module_name, _, attribute = target.partition(":")
    try:
        found = importlib.import_module(module_name)
    except Exception as exc:
        raise ImportFailed(
            f"cannot import {module_name!r} for {target}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ImportFailed(f"module {module_name!r} has no {attribute!r}")
        found = getattr(found, part)
    return found
