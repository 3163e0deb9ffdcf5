"""``fanflow``: run, check, draw and inspect workflows.

Each command group lives in its own module (``run``, ``runs``, ``workflows``, ``predict``,
``kube``, ``doctor``, ``ui``); this one only wires them into one command and maps user errors to exit
code 2, and a run store that cannot be used to one line and exit code 1.

A command's module is imported, and its options built, only when that command runs (or
``--help`` lists it): ``fanflow validate`` does not pay for what ``fanflow run`` imports."""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from fanflow.cli.common import UsageError, err, escape
from fanflow.errors import RunNotFound
from fanflow.spec.errors import SpecError
from fanflow.stores.errors import RunLeased, RunStoreError

# Each command's module and function (or sub-app), in the order `fanflow --help` lists them.
COMMANDS = {
    "run": ("run", "run"),
    "resume": ("run", "resume"),
    "serve": ("run", "serve"),
    "predict": ("predict", "predict"),
    "validate": ("workflows", "validate"),
    "pack": ("workflows", "pack"),
    "describe": ("workflows", "describe"),
    "schema": ("workflows", "schema"),
    "graph": ("workflows", "graph"),
    "list": ("workflows", "list_workflows"),
    "runs": ("runs", "runs"),
    "show": ("runs", "show"),
    "logs": ("runs", "logs"),
    "artifacts": ("runs", "artifacts"),
    "gc": ("runs", "gc"),
    "doctor": ("doctor", "doctor"),
    "ui": ("ui", "ui"),
    "exec": ("kube", "exec_command"),
    "export": ("kube", "export_app"),
}
# Commands that read workflow files and run no step: they skip pydantic's plugins, which serve
# users' models and cost a scan of every installed package's entry points (0.03 s) to find.
READ_ONLY = {"validate", "pack", "describe", "schema", "graph", "list"}


class LazyGroup(TyperGroup):
    """The ``fanflow`` group, building each command from ``COMMANDS`` when it is asked for."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in COMMANDS:
            self.commands[name] = _build(name)
        return self.commands.get(name)

    def resolve_command(self, ctx, args):
        if args and args[0] not in COMMANDS:  # a misspelt name: "did you mean" looks through them all
            for name in COMMANDS:
                self.get_command(ctx, name)
        name, command, rest = super().resolve_command(ctx, args)
        if name in READ_ONLY:  # before its options are parsed, which builds pydantic validators
            os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        return name, command, rest


def _build(name: str):
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(f"fanflow.cli.{module}"), attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


app = typer.Typer(
    name="fanflow",
    help="Machine-learning workflows built on fan-out and fan-in.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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
    # When the command ends, so does the process: the interpreter's last garbage collections
    # need not scan what it made (after a run of 10,000 tasks they took 60 to 150 ms). Only
    # the search for reference cycles is skipped: atexit handlers still run, and objects are
    # still released as the interpreter shuts down.
    atexit.register(gc.freeze)
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
