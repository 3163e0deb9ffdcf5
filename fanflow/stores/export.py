"""A run's outputs under readable names: one folder per task (``STEP``, or ``STEP/AXIS=LABEL``
for a branch of a fan-out), each stored file copied as ``NAME.EXT`` (a returned file keeps its
own name, other values are named by the field that holds them: ``model.pt``,
``test.x.npy``, ``output.parquet``), and the rest of the output, with those names in place of
the artifacts, as ``output.json``."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fanflow.stores.artifacts import ArtifactStore
from fanflow.vocab.manifest import ARTIFACT_KEY, map_artifacts

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+@-]")


@dataclass(frozen=True)
class Exported:
    task: str
    path: Path  # the written file
    size: int


@dataclass(frozen=True)
class Named:
    """A stored file of a task's output and the readable name it gets."""

    task: str
    ref: dict  # the artifact reference
    path: PurePosixPath  # relative to the folder outputs are written to


def task_folder(task: str) -> PurePosixPath:
    """Where a task's outputs go: ``train[model=cnn]`` -> ``train/model=cnn``."""
    step, bracket, rest = task.partition("[")
    parts = step.split("/") + ([rest.removesuffix("]")] if bracket else [])
    return PurePosixPath(*(_safe(part) for part in parts))


def name_files(task: str, manifest: Any) -> tuple[list[Named], Any]:
    """The stored files of a task's output with their readable names, and the rest of the
    output with those names in place of the artifacts (None when the output is one file)."""
    folder = task_folder(task)
    files: list[Named] = []
    taken: set[str] = set()

    def name(ref: dict, path: tuple) -> str:
        chosen = _file_name(ref, path, taken)
        files.append(Named(task, ref, folder / chosen))
        return chosen

    rest = map_artifacts(manifest, name)
    single = isinstance(manifest, dict) and ARTIFACT_KEY in manifest
    return files, None if single or manifest is None else rest


def export_task(task: str, manifest: Any, store: ArtifactStore, out: str | Path) -> list[Exported]:
    """Write one task's output under ``out``; returns the files written."""
    files, rest = name_files(task, manifest)
    written: list[Exported] = []
    for named in files:
        target = Path(out) / named.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.path(named.ref[ARTIFACT_KEY], named.ref.get("suffix", ""), verify=True), target)
        written.append(Exported(task, target, target.stat().st_size))
    if rest is not None:
        target = Path(out) / task_folder(task) / "output.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(rest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(Exported(task, target, target.stat().st_size))
    return written


def _file_name(ref: dict, path: tuple, taken: set[str]) -> str:
    suffix = ref.get("suffix", "")
    original = ref.get("name") if ref.get("format") == "file" else None
    name = _safe(original) if original else _safe(".".join(map(str, path)) or "output") + suffix
    stem, count = name.removesuffix(suffix) if suffix else name, 1
    while name in taken or name == "output.json":
        count += 1
        name = f"{stem}-{count}{suffix}"
    taken.add(name)
    return name


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).lstrip(".") or "_"
