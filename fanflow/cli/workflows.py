"""Workflow files: ``fanflow validate``, ``describe``, ``list``, ``schema``, ``graph``, ``pack``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fanflow.cli.common import UsageError, err, escape, load, locate, out


def validate(workflow: Annotated[Path, typer.Argument(help="A workflow file (.yaml or .py).")]) -> None:
    """Check a workflow file; print its steps when it is valid."""
    spec = load(workflow)
    out.print(
        f"[green]✓[/] {workflow}: workflow {spec.name!r}, {len(spec.steps)} steps ({', '.join(spec.steps)})",
        markup=True,
        soft_wrap=True,
    )


def pack(
    workflow: Annotated[Path, typer.Argument(help="A workflow file or an installed workflow's name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the bundle into.")] = Path(
        "."
    ),
) -> None:
    """Write one self-contained, versioned bundle of a workflow (its files, its project
    modules and pinned requirements) that `fanflow run BUNDLE` runs elsewhere."""
    from fanflow import bundle

    path = bundle.pack(locate(workflow), output)
    out.print(str(path))


def list_workflows() -> None:
    """List the workflows installed by Python packages (the fanflow.workflows entry points)."""
    from rich.table import Table

    from fanflow.spec.loader import load_workflow
    from fanflow.spec.registry import installed

    table = Table(header_style="bold", box=None)
    for column in ("name", "package", "description"):
        table.add_column(column, overflow="fold")
    for name, entry in installed().items():
        try:
            description = load_workflow(entry.path(), check_imports=False).description
        except Exception as exc:  # a broken package must not hide the others
            description = f"[red]cannot load: {escape(str(exc))}[/]"
        table.add_row(name, entry.package or "", description)
    out.print(table if table.row_count else "no workflows installed")


def describe(
    workflow: Annotated[Path, typer.Argument(help="A workflow file or an installed workflow's name.")],
) -> None:
    """Show a workflow's parameters (types, defaults, descriptions), presets and steps."""
    from rich.table import Table

    spec = load(workflow)
    out.print(
        f"[bold]{escape(spec.name)}[/]" + (f": {escape(spec.description)}" if spec.description else ""),
        markup=True,
    )
    params = Table(title="parameters", title_justify="left", header_style="bold", box=None)
    for column in ("name", "type", "default", "description"):
        params.add_column(column, overflow="fold")
    for name, param in spec.params.items():
        default = "(required)" if param.required else json.dumps(param.default, default=str)
        choices = f" (one of {', '.join(map(str, param.choices))})" if param.choices else ""
        params.add_row(name, param.type, default, param.description + choices)
    out.print(params)
    if spec.presets:
        presets = Table(title="presets (--preset NAME)", title_justify="left", header_style="bold", box=None)
        for column in ("preset", "parameters", "description"):
            presets.add_column(column, overflow="fold")
        for name, preset in spec.presets.items():
            values = ", ".join(f"{key}={json.dumps(value, default=str)}" for key, value in preset.params.items())
            presets.add_row(name, values, preset.description)
        out.print(presets)
    steps = Table(title="steps", title_justify="left", header_style="bold", box=None)
    for column in ("step", "uses", "fan-out", "kind"):
        steps.add_column(column, overflow="fold")
    for name, step in spec.steps.items():
        fan = ", ".join(
            f"{axis}: {values if isinstance(values, str) else len(values)}"
            for axis, values in (step.fan_out or {}).items()
        )
        steps.add_row(name, step.uses, fan, step.kind)
    out.print(steps)


def schema() -> None:
    """Print the workflow files' JSON Schema (for editors to check and complete them)."""
    from fanflow.spec.schema import json_schema

    print(json.dumps(json_schema(), indent=2))


def graph(
    workflow: Annotated[Path, typer.Argument(help="A workflow file (.yaml or .py).")],
    format: Annotated[str, typer.Option("--format", "-f", help="mermaid, dot or png.")] = "mermaid",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Draw a workflow as Mermaid or Graphviz DOT (or a PNG where Graphviz is installed)."""
    from fanflow.exporters import graph as drawing

    spec = load(workflow)
    if format == "png":
        target = output or Path(f"{spec.name}.png")
        if not drawing.png(spec, str(target)):
            raise UsageError(
                "PNG needs Graphviz's 'dot' program (apt-get install graphviz); use --format dot or mermaid"
            )
        err.print(f"wrote {target}")
        return
    if format not in ("mermaid", "dot"):
        raise UsageError(f"--format {format!r}: expected mermaid, dot or png")
    text = drawing.mermaid(spec) if format == "mermaid" else drawing.dot(spec)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        print(text, end="")
