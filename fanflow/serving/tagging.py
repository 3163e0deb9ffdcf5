"""Tagging clips with a served model or the ensemble gateway, as a user does: read clip
files with the data sources' checks, ask the server, and get back every clip's tags, each
with its provenance (which models found it, their scores), the members that failed (a
degraded answer) and how long the server took.

``fanflow predict`` prints this; the web UI's tagging page shows it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fanflow.serving import wire
from fanflow.serving.client import ClientError, V2Client

BATCH = 32  # clips per request

__all__ = ["ClientError", "ClipError", "Tagged", "read_clips", "tag_clips"]


class ClipError(Exception):
    """A clip file that cannot be read; the message names the file."""


@dataclass
class Tagged:
    """A server's answer for some clips."""

    model: str  # the served model's name ("ensemble" for the gateway)
    tags: list[list[str]]  # per clip
    provenance: list[list[dict]]  # per clip, per tag: {"tag", "score", "found_by", "scores"}
    failed: dict[str, str] = field(default_factory=dict)  # member -> why it gave no answer
    seconds: float = 0.0  # from the first request sent to the last answer read

    @property
    def degraded(self) -> bool:
        return bool(self.failed)


def read_clips(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The clips in ``path`` as float32 (k, T, H, W): a ``.npy`` file holds one clip (T, H, W)
    or several (k, T, H, W); any other file is a video, decoded by ``fanflow.ml.video``."""
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


def tag_clips(client: V2Client, clips: np.ndarray) -> Tagged:
    """Tag ``clips`` (float32 (n, T, H, W) in [0, 1]) with the server ``client`` talks to;
    raises ``ClientError`` when it cannot be reached or refuses."""
    model = client.model_name()
    answer = Tagged(model, [], [])
    started = time.perf_counter()
    for start in range(0, len(clips), BATCH):
        response = client.infer(clips[start : start + BATCH])
        try:
            batch = wire.decode(response)
        except ValueError as e:
            raise ClientError(f"{client.base}: not a fanflow tag response ({e})") from None
        answer.tags += batch.tags
        answer.provenance += _provenance(batch, model)
        answer.failed.update(json.loads(response.get("parameters", {}).get("failed_members", "{}")))
    answer.seconds = time.perf_counter() - started
    return answer


def _provenance(batch: wire.TagBatch, model: str) -> list[list[dict]]:
    """The gateway says which members found each tag; a single model found its own."""
    if batch.provenance is not None:
        return batch.provenance
    column = {tag: j for j, tag in enumerate(batch.vocabulary)}
    return [
        [{"tag": t, "score": round(float(row[column[t]]), 6), "found_by": [model]} for t in tags]
        for tags, row in zip(batch.tags, batch.scores, strict=True)
    ]
