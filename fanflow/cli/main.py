"""``fanflow``: run, check, draw and inspect workflows.

Each command group lives in its own module (``run``, ``runs``, ``workflows``, ``predict``,
``kube``, ``doctor``, ``ui``); this one only wires them into one command and maps user errors to exit
code 2, and a run store that cannot be used to one line and exit code 1."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from fanflow.cli import doctor, kube, predict, run, runs, ui, workflows
from fanflow.cli.common import UsageError, err, escape
from fanflow.errors import RunNotFound
from fanflow.spec.errors import SpecError
from fanflow.stores.errors import RunLeased, RunStoreError

app = typer.Typer(
    name="fanflow",
    help="Machine-learning workflows built on fan-out and fan-in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for command in (run.run, run.resume, run.serve, predict.predict):
    app.command()(command)
for command in (workflows.validate, workflows.pack, workflows.describe, workflows.schema, workflows.graph):
    app.command()(command)
app.command("list")(workflows.list_workflows)
for command in (runs.runs, runs.show, runs.logs, runs.artifacts, runs.gc, doctor.doctor):
    app.command()(command)
app.command("ui")(ui.ui)
app.add_typer(kube.export_app, name="export")
app.command("exec")(kube.exec_command)


def _version_callback(value: bool) -> None:
    if value:
        from fanflow import __version__

        print(f"fanflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def main() -> None:
    try:
        app()
    except SpecError as exc:
        for issue in exc.issues:
            err.print(
                f"[bold red]error:[/] {escape(str(issue))}", markup=True, highlight=False, soft_wrap=True
            )
        sys.exit(2)
    except (UsageError, RunNotFound, RunLeased) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except RunStoreError as exc:  # damaged, full, or not a run store: what to do, not a traceback
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
