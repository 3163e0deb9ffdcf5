"""Reading a module's code without running it: where its file is, which modules it imports
(found with ``ast``), and whether it is the project's own code or an installed
distribution's (and which version).

A module is *installed* when its file lies in a site-packages folder: it is known by its
distribution's name and version. A module of the standard library is part of Python. Any
other module with a source file (next to the workflow, in the project, in an editable
install) is the project's own code, known by its source.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import site
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Found:
    name: str
    origin: str | None  # the module's file; None for a namespace package
    is_package: bool
    search: tuple[str, ...] = ()  # where its submodules are, for a package


def find(name: str, path: list[str] | None = None) -> Found | None:
    """Where the module ``name`` is, searching ``path`` (default ``sys.path``) for its top
    level, without importing it or its parent packages."""
    parts = name.split(".")
    spec = importlib.machinery.PathFinder.find_spec(parts[0], path if path is not None else sys.path)
    if spec is None:
        try:  # installed through an import hook (an editable install's finder, say)
            spec = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            spec = None
    for depth in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(
            ".".join(parts[: depth + 1]), list(spec.submodule_search_locations)
        )
    if spec is None:
        return None
    origin = spec.origin if spec.has_location else None
    search = tuple(spec.submodule_search_locations or ())
    return Found(name, origin, bool(search), search)


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, bool]]:
    """Every module an import statement in ``tree`` names, relative imports resolved, as
    (name, certain): ``from pkg import x`` names ``pkg`` certainly and ``pkg.x`` only
    perhaps (``x`` may be a plain attribute)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, True) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if not base:
                continue
            found.append((base, True))
            found += [(f"{base}.{alias.name}", False) for alias in node.names if alias.name != "*"]
    return found


def is_stdlib(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


@functools.cache
def _site_folders() -> tuple[Path, ...]:
    folders = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    folders |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return tuple(Path(f).resolve() for f in folders if f)


def is_installed(origin: str | None) -> bool:
    """Whether a module's file lies in a site-packages folder."""
    if not origin:
        return False
    path = Path(origin).resolve()
    return any(path.is_relative_to(folder) for folder in _site_folders()) or any(
        part in ("site-packages", "dist-packages") for part in path.parts
    )


def distribution_versions(top: str) -> tuple[str, ...]:
    """``name==version`` of the installed distributions that provide the top-level module
    ``top`` (most distributions are named like their module; the others are looked up)."""
    try:
        names = [metadata.distribution(top).metadata["Name"]]
    except metadata.PackageNotFoundError:
        names = _providers().get(top, [])
    pins = set()
    for name in names:
        try:
            pins.add(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return tuple(sorted(pins))


@functools.cache
def _providers() -> dict[str, list[str]]:
    return metadata.packages_distributions()
