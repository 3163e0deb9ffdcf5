"""A task's outputs made readable: each stored file under its readable name, with what a
person needs to see it (an image or a clip inline, an array's shape, dtype and first values,
JSON as a tree, Markdown rendered, an HTML report in a sandbox, a table's first rows, a
model card), and the plain values around them.

Files are read through the artifact store and checked against their digest once per
process; only files that a task of the run names are ever served."""

from __future__ import annotations

import io
import json
import mimetypes
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fanflow.stores.artifacts import ArtifactStore, IntegrityError
from fanflow.stores.export import name_files
from fanflow.ui import reports
from fanflow.vocab.manifest import ARTIFACT_KEY, FLOAT_KEY, VALUE_KEY

IMAGE = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".bmp"}
VIDEO = {".mp4", ".webm", ".ogv", ".mov"}
TEXT = {".txt", ".log", ".csv", ".tsv", ".yaml", ".yml", ".py", ".toml", ".ini"}
JSON_LIMIT = 2 << 20  # larger JSON files are offered as downloads only
TEXT_LIMIT = 64 << 10  # characters of a text file shown
TREE_ITEMS = 100  # children shown per JSON object or list
TREE_DEPTH = 12


@dataclass
class FileView:
    """One stored file of a task's output."""

    task: str
    path: PurePosixPath  # the readable name: STEP[/AXIS=LABEL]/NAME.EXT
    ref: dict
    kind: str = "binary"  # image, video, array, json, markdown, card, html, table, text, binary,
    #                       leaderboard, report
    detail: Any = None  # what the kind shows: a tree, rendered Markdown, a preview, a document

    @property
    def digest(self) -> str:
        return self.ref[ARTIFACT_KEY]

    @property
    def suffix(self) -> str:
        return self.ref.get("suffix", "")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def size(self) -> int:
        return int(self.ref.get("size") or 0)

    @property
    def download_name(self) -> str:
        return "-".join(self.path.parts)


@dataclass
class OutputView:
    """A task's output: its files, and the rest of the value (None when it is one file)."""

    task: str
    files: list[FileView] = field(default_factory=list)
    value: Any = None
    has_value: bool = False


class Artifacts:
    """Reads a project's artifact store for the UI, each object verified once."""

    def __init__(self, url: str):
        self.artifact_store = ArtifactStore(url)
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    def path(self, digest: str, suffix: str) -> Path:
        path = self.artifact_store.path(digest, suffix, verify=digest not in self._verified)
        with self._lock:
            self._verified.add(digest)
        return path

    # -- a task's output ----------------------------------------------------------------
    def output(self, task: str, manifest: Any, file_url: Callable[[FileView], str]) -> OutputView:
        """A task's output with a preview of each file; ``file_url`` says where a file is
        served (for the images a Markdown file shows)."""
        files, rest = name_files(task, manifest)
        view = OutputView(task, [FileView(task, named.path, named.ref) for named in files])
        if rest is not None:
            view.value, view.has_value = tree(plain(rest)), True
        images = {f.name: file_url(f) for f in view.files if f.suffix.lower() in IMAGE}
        for file in view.files:
            file.kind = kind_of(file)
            self._describe(file, images)
        return view

    def find(self, task: str, manifest: Any, digest: str) -> FileView | None:
        """The file of ``task``'s output stored under ``digest``, if it has one."""
        for named in name_files(task, manifest)[0]:
            if named.ref[ARTIFACT_KEY] == digest:
                file = FileView(task, named.path, named.ref)
                file.kind = kind_of(file)
                return file
        return None

    def _describe(self, file: FileView, images: dict[str, str]) -> None:
        try:
            if file.kind == "array":
                file.detail = self.array_preview(file)
            elif file.kind in ("json", "leaderboard", "report"):
                if file.size > JSON_LIMIT:
                    file.kind = "binary"
                    return
                document = json.loads(self.path(file.digest, file.suffix).read_text(encoding="utf-8"))
                special = reports.recognise(document)
                if special is not None:
                    file.kind, file.detail = special
                else:
                    file.kind, file.detail = "json", tree(document)
            elif file.kind in ("markdown", "card"):
                text = self.path(file.digest, file.suffix).read_text(encoding="utf-8", errors="replace")
                file.detail = reports.markdown(text[: 4 * TEXT_LIMIT], images)
            elif file.kind == "table":
                file.detail = self.table_preview(file)
            elif file.kind == "text":
                with open(self.path(file.digest, file.suffix), encoding="utf-8", errors="replace") as f:
                    file.detail = f.read(TEXT_LIMIT)
        except (OSError, ValueError, IntegrityError) as exc:
            file.kind, file.detail = "unreadable", f"{type(exc).__name__}: {exc}"

    def array_preview(self, file: FileView) -> dict:
        import numpy as np

        array = np.load(self.path(file.digest, file.suffix), mmap_mode="r", allow_pickle=False)
        head = array[(0,) * max(array.ndim - 1, 0)] if array.ndim > 1 else array
        sample = np.asarray(head[:12])
        numeric = array.dtype.kind in "uifb" and array.size
        flat = np.asarray(array.reshape(-1)[: 1 << 20]) if numeric else None
        return {
            "shape": list(array.shape),
            "size": int(array.size),
            "dtype": str(array.dtype),
            "first": np.array2string(sample, precision=4, threshold=12, edgeitems=6, max_line_width=100),
            "stats": None if flat is None else {
                "min": float(flat.min()), "max": float(flat.max()), "mean": float(flat.mean(dtype=np.float64)),
                "of": int(flat.size),
            },
            "image": bool(numeric and array.ndim >= 2 and all(4 <= d <= 1024 for d in array.shape[-2:])),
        }

    def array_image(self, file: FileView) -> bytes:
        """The first 2-D slice of an array as a PNG, grey levels stretched to its range."""
        import numpy as np
        from PIL import Image

        array = np.load(self.path(file.digest, file.suffix), mmap_mode="r", allow_pickle=False)
        frame = np.asarray(array[(0,) * (array.ndim - 2)], dtype=np.float64)
        low, high = float(frame.min()), float(frame.max())
        grey = np.zeros_like(frame) if high == low else (frame - low) / (high - low)
        image = Image.fromarray((grey * 255).round().astype(np.uint8))
        scale = max(1, 160 // max(image.size))
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    def table_preview(self, file: FileView, rows: int = 20) -> dict:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self.path(file.digest, file.suffix))
        batch = next(parquet.iter_batches(batch_size=rows), None)
        columns = parquet.schema_arrow.names
        data = batch.to_pylist() if batch is not None else []
        return {"columns": columns, "rows": [[row.get(c) for c in columns] for row in data],
                "total": parquet.metadata.num_rows}


def kind_of(file: FileView) -> str:
    suffix = file.suffix.lower()
    fmt = file.ref.get("format")
    if fmt == "npy":
        return "array"
    if fmt == "parquet" or suffix == ".parquet":
        return "table"
    if suffix in IMAGE:
        return "image"
    if suffix in VIDEO:
        return "video"
    if suffix == ".json":
        return "json"
    if suffix == ".md":
        return "card" if file.name.endswith(".card.md") else "markdown"
    if suffix in (".html", ".htm"):
        return "html"
    if suffix in TEXT:
        return "text"
    return "binary"


def media_type(file: FileView) -> str:
    if file.suffix.lower() == ".md":
        return "text/markdown; charset=utf-8"
    guessed = mimetypes.guess_type("x" + file.suffix.lower())[0] or "application/octet-stream"
    return guessed + ("; charset=utf-8" if guessed.startswith("text/") or guessed.endswith("json") else "")


def plain(value: Any) -> Any:
    """A manifest's inline values as a person reads them: typed values by their text."""
    if isinstance(value, dict):
        if FLOAT_KEY in value and len(value) == 1:
            return float(value[FLOAT_KEY])
        if VALUE_KEY in value:
            return plain(value.get("data"))
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass
class Tree:
    """A JSON value laid out for a collapsible tree: a leaf, or children by key."""

    kind: str  # object, array, string, number, bool, null
    text: str = ""
    children: list[tuple[str, Tree]] = field(default_factory=list)
    more: int = 0  # children left out

    @property
    def size(self) -> int:
        return len(self.children) + self.more


def tree(value: Any, depth: int = 0) -> Tree:
    if isinstance(value, dict | list):
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        if depth >= TREE_DEPTH:
            return Tree("string", json.dumps(value)[:200] + "…")
        shown = [(str(k), tree(v, depth + 1)) for k, v in items[:TREE_ITEMS]]
        return Tree("object" if isinstance(value, dict) else "array", children=shown,
                    more=max(len(items) - TREE_ITEMS, 0))
    if isinstance(value, bool):
        return Tree("bool", "true" if value else "false")
    if value is None:
        return Tree("null", "null")
    if isinstance(value, int | float):
        return Tree("number", f"{value:.6g}" if isinstance(value, float) else str(value))
    return Tree("string", str(value))
