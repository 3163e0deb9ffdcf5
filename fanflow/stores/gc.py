"""Garbage collection: old runs, their logs, artifacts nothing references any more, and the
temporary files of writes that never finished (a killed engine or worker)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

from fanflow.stores.artifacts import ArtifactStore
from fanflow.vocab.imports import shipped_digest
from fanflow.vocab.units import parse_duration


@dataclass
class GcReport:
    runs: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    bytes: int = 0
    kept_runs: int = 0
    temp_files: list[str] = field(default_factory=list)
    temp_bytes: int = 0


TEMP_GRACE = 3600.0  # while a run is live, only temporary files older than this are its leftovers


def collect(project, *, keep: int = 20, older_than: str | None = None, dry_run: bool = False) -> GcReport:
    if keep < 0:
        raise ValueError("--keep must be 0 or more")
    cutoff = None
    if older_than:
        cutoff = time.time() - parse_duration(older_than)
    store = project.store
    rows = store.list_runs(limit=10**9)
    report = GcReport()
    for index, row in enumerate(rows):
        droppable = (
            index >= keep and row.state not in ("running",) and (cutoff is None or row.started < cutoff)
        )
        if droppable:
            report.runs.append(row.id)
    report.kept_runs = len(rows) - len(report.runs)
    if not dry_run and report.runs:
        store.delete_runs(report.runs)
        for run_id in report.runs:
            shutil.rmtree(project.home / "logs" / run_id, ignore_errors=True)
            shutil.rmtree(project.home / "tmp" / run_id, ignore_errors=True)
    artifacts = ArtifactStore(project.artifacts_url)
    live = any(row.state == "running" for row in rows)
    for path in artifacts.temp_files(older_than=TEMP_GRACE if live else 0.0):
        try:
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:  # its write just finished
            continue
        report.temp_files.append(str(path))
        report.temp_bytes += size
    if not artifacts.local:
        return report  # remote stores are shared: leave their objects alone
    keep_digests = store.referenced_digests()
    if dry_run:  # what the dropped runs alone reference would also go
        keep_digests = _still_referenced(store, report.runs)
    keep_digests |= _shipped_code(store, set(report.runs))
    for digest, suffix, path in artifacts.iter_objects():
        if digest not in keep_digests:
            report.artifacts.append(digest)
            report.bytes += path.stat().st_size
            if not dry_run:
                artifacts.delete(digest, suffix)
    if not dry_run:
        store.forget_artifacts(report.artifacts)
    return report


def _still_referenced(store, dropped: list[str]) -> set[str]:
    dropped_set = set(dropped)
    digests: set[str] = set()
    for row in store.list_runs(limit=10**9):
        if row.id in dropped_set:
            continue
        digests |= {r["digest"] for r in store.lineage(row.id)}
    digests |= store.cached_digests(exclude_runs=dropped_set)
    return digests


def _shipped_code(store, dropped: set[str]) -> set[str]:
    """The code shipped with the runs that stay (steps defined in a notebook): a resumed or
    served run reads it again."""
    digests: set[str] = set()
    for row in store.list_runs(limit=10**9):
        if row.id not in dropped:
            steps = (row.spec or {}).get("steps", {}).values()
            digests |= {shipped_digest(step.get("uses", "")) for step in steps} - {None}
    return digests
