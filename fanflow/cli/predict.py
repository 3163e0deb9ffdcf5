"""``fanflow predict``: ask a model server or the ensemble gateway to tag clips, and print
each clip's tags with their provenance (a table, or JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import numpy as np

    from fanflow.serving import wire
    from fanflow.serving.client import V2Client

# numpy and the serving client are imported when a command needs them: every other command
# starts faster without them.

BATCH = 32  # clips per request


def predict(
    clip_files: Annotated[
        list[Path], typer.Argument(metavar="CLIP_FILE...", help="Video files or .npy clips.")
    ],
    url: Annotated[str, typer.Option(help="A model server's or the gateway's address.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tag clips with a served model or the ensemble; each tag says which model found it."""
    raise typer.Exit(tag_files(url, clip_files, as_json=json_output))


class ClipError(Exception):
    """A clip file that cannot be read; the message names the file."""


def read_clips(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The clips in ``path`` as float32 (k, T, H, W): a ``.npy`` file holds one clip (T, H, W)
    or several (k, T, H, W); any other file is a video, decoded by ``fanflow.ml.video``."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ClipError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ClipError(f"{path}: not a readable .npy file ({e})") from None
        if array.ndim == len(shape):
            array = array[None]
        if array.shape[1:] != tuple(shape) or array.dtype.kind not in "uif" or len(array) == 0:
            raise ClipError(
                f"{path}: expected numbers shaped {tuple(shape)} or (n, {', '.join(map(str, shape))}), "
                f"got {array.dtype} {array.shape}"
            )
        return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    try:
        from fanflow.ml.video import read_clip
    except ImportError:
        raise ClipError(f"{path}: only .npy clips can be read here (fanflow.ml.video is missing)") from None
    frames, *size = shape
    try:
        return read_clip(path, frames=frames, size=tuple(size))[None]
    except (OSError, ValueError) as e:  # fanflow.ml.DataError is a ValueError
        raise ClipError(str(e) if str(path) in str(e) else f"{path}: {e}") from None


def _provenance(batch: wire.TagBatch, model: str) -> list[list[dict]]:
    if batch.provenance is not None:
        return batch.provenance
    column = {tag: j for j, tag in enumerate(batch.vocabulary)}
    return [
        [{"tag": t, "score": round(float(row[column[t]]), 6), "found_by": [model]} for t in tags]
        for tags, row in zip(batch.tags, batch.scores, strict=True)
    ]


def _ask(client: V2Client, clips: np.ndarray) -> tuple[list[list[str]], list[list[dict]], dict]:
    from fanflow.serving import wire
    from fanflow.serving.client import ClientError

    model = client.model_name()
    tags, provenance, failed = [], [], {}
    for start in range(0, len(clips), BATCH):
        response = client.infer(clips[start : start + BATCH])
        try:
            batch = wire.decode(response)
        except ValueError as e:
            raise ClientError(f"{client.base}: not a fanflow tag response ({e})") from None
        tags += batch.tags
        provenance += _provenance(batch, model)
        failed.update(json.loads(response.get("parameters", {}).get("failed_members", "{}")))
    return tags, provenance, failed


def tag_files(url: str, clip_files: list[Path], as_json: bool = False) -> int:
    """Tag the clips in ``clip_files`` with the model at ``url``; print a table (or JSON).
    Returns the exit code: 0, or 1 with one line on stderr when a file or the server fails."""
    import numpy as np

    from fanflow.serving.client import ClientError, V2Client

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
            tags, provenance, failed = _ask(client, np.concatenate(arrays))
            model = client.model_name()
    except (ClientError, ClipError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if as_json:
        result = {
            "model": model,
            "degraded": bool(failed),
            "clips": [
                {"clip": name, "tags": t, "provenance": p}
                for name, t, p in zip(names, tags, provenance, strict=True)
            ],
        }
        if failed:
            result["failed_members"] = failed
        print(json.dumps(result, indent=2))
    else:
        _print_table(model, names, tags, provenance, failed)
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
