"""``fanflow predict``: ask a model server or the ensemble gateway to tag clips, and print
each clip's tags with their provenance (a table, or JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

# numpy and the serving client are imported when a command needs them: every other command
# starts faster without them.


def predict(
    clip_files: Annotated[
        list[Path], typer.Argument(metavar="CLIP_FILE...", help="Video files or .npy clips.")
    ],
    url: Annotated[str, typer.Option(help="A model server's or the gateway's address.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tag clips with a served model or the ensemble; each tag says which model found it."""
    raise typer.Exit(tag_files(url, clip_files, as_json=json_output))


def tag_files(url: str, clip_files: list[Path], as_json: bool = False) -> int:
    """Tag the clips in ``clip_files`` with the model at ``url``; print a table (or JSON).
    Returns the exit code: 0, or 1 with one line on stderr when a file or the server fails."""
    import numpy as np

    from fanflow.serving.client import ClientError, V2Client
    from fanflow.serving.tagging import ClipError, read_clips, tag_clips

    try:
        with V2Client(url) as client:
            shape = client.input_shape()
            names, arrays = [], []
            for path in clip_files:
                clips = read_clips(Path(path), shape)
                arrays.append(clips)
                names += [str(path)] if len(clips) == 1 else [f"{path}[{i}]" for i in range(len(clips))]
            if not arrays:
                raise ClipError("no clip files given")
            answer = tag_clips(client, np.concatenate(arrays))
    except (ClientError, ClipError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if as_json:
        result = {
            "model": answer.model,
            "degraded": answer.degraded,
            "clips": [
                {"clip": name, "tags": t, "provenance": p}
                for name, t, p in zip(names, answer.tags, answer.provenance, strict=True)
            ],
        }
        if answer.failed:
            result["failed_members"] = answer.failed
        print(json.dumps(result, indent=2))
    else:
        _print_table(answer.model, names, answer.tags, answer.provenance, answer.failed)
    return 0


def _found_by(p: dict) -> str:
    scores = p.get("scores", {})
    if not p["found_by"]:  # emitted on a mean score that no member reached alone
        return f"{p['tag']}: combined {p['score']:.2f}"
    return f"{p['tag']}: " + ", ".join(f"{m} {scores.get(m, p['score']):.2f}" for m in p["found_by"])


def _print_table(model, names, tags, provenance, failed) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Tags from {model}")
    table.add_column("clip", overflow="fold")
    table.add_column("tags")
    table.add_column("found by (score)")
    for name, clip_tags, clip_provenance in zip(names, tags, provenance, strict=True):
        found = "\n".join(_found_by(p) for p in clip_provenance)
        table.add_row(name, ", ".join(clip_tags) or "-", found or "-")
    console = Console()
    console.print(table)
    for member, why in failed.items():
        console.print(f"[yellow]degraded:[/] member {member} did not answer: {why}")
