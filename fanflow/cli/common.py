"""What every command shares: the consoles, the --home option, user errors, and finding the
workflow or project a command names."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape as _markup_escape

# Piped output (a log, CI) gets 120 columns rather than Rich's 80, so reports stay readable.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="The project's store folder (default: $FANFLOW_HOME, else .fanflow in the nearest folder "
        "upwards with a pyproject.toml, .git or .fanflow).",
    ),
]


class UsageError(Exception):
    """A user's mistake: one line on stderr, exit code 2."""


def open_project(home: Path | None):
    from fanflow.project import Project

    return Project(home)


def parse_params(values: list[str] | None) -> dict[str, str]:
    params = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-p {value!r}: expected KEY=VALUE")
        params[key.strip()] = text
    return params


def load(path: Path, home: Path | None = None):
    """A workflow file, a bundle, or the name of an installed workflow (``fanflow list``)."""
    from fanflow.spec.loader import load_workflow

    return load_workflow(locate(path, home))


def locate(path: Path, home: Path | None = None) -> Path:
    located = open_project(home).locate(path)
    for warning in located.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True)
    return located.path


def escape(text: str) -> str:
    """Text shown verbatim inside Rich markup (task names hold brackets)."""
    return _markup_escape(text)
