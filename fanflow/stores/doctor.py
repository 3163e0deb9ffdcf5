"""Checking a whole project's stores, and repairing what can be repaired (``fanflow doctor``).

The run store's database is checked page by page (SQLite's ``integrity_check``); a damaged
one is repaired by moving it aside and copying every row that can still be read into a new
file. Every artifact is hashed again (stamps are not trusted) and those that do not match
their names are moved to the store's ``quarantine/``, so nothing reads them again; the steps
that made them run again when next needed. Cache entries whose artifacts are gone are
dropped on repair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from fanflow.stores import dbfile
from fanflow.stores.artifacts import ArtifactStore, Damaged
from fanflow.stores.errors import RunStoreError
from fanflow.stores.runs import RunStore, create_store
from fanflow.stores.schema import cache
from fanflow.vocab.manifest import ARTIFACT_KEY, artifact_refs


@dataclass
class Report:
    db: str
    db_problems: list[str] = field(default_factory=list)
    db_repair: str | None = None  # what the repair did
    objects: int = 0
    bytes: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    stale_cache: list[str] = field(default_factory=list)
    cache_dropped: bool = False
    temp_files: int = 0
    temp_bytes: int = 0

    @property
    def healthy(self) -> bool:
        return not (self.db_problems or self.damaged or self.stale_cache)


def examine(db_url: str, artifacts_url: str, *, repair: bool = False) -> Report:
    report = Report(db=str(dbfile.sqlite_file(db_url) or db_url))
    _examine_db(db_url, report, repair)
    artifacts = ArtifactStore(artifacts_url, verify=True)
    if artifacts.local:
        for _, _, path in artifacts.iter_objects():
            report.objects += 1
            report.bytes += path.stat().st_size
        report.damaged = list(artifacts.check_all(quarantine=True))
    temp = artifacts.temp_files()
    report.temp_files, report.temp_bytes = len(temp), sum(_size(p) for p in temp)
    if not report.db_problems or report.db_repair:
        _examine_cache(db_url, artifacts, report, repair)
    return report


def _examine_db(db_url: str, report: Report, repair: bool) -> None:
    path = dbfile.sqlite_file(db_url)
    if path is None:
        try:
            RunStore(db_url).close()
        except RunStoreError as exc:
            report.db_problems.append(str(exc))
        return
    if not path.exists():
        return
    report.db_problems = dbfile.check(path)
    if report.db_problems and repair:
        moved, counts = dbfile.salvage(path, create_store)
        kept = sum(k for k, _ in counts.values())
        lost = sum(lost for _, lost in counts.values())
        report.db_repair = (
            f"moved the damaged file to {moved}; a new run store holds the {kept} rows that could "
            f"still be read" + (f" ({lost} could not)" if lost else "")
        )


def _examine_cache(db_url: str, artifacts: ArtifactStore, report: Report, repair: bool) -> None:
    try:
        store = RunStore(db_url)
    except RunStoreError:
        return
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(cache.c.key, cache.c.output)).all()
        for key, output in rows:
            for ref in artifact_refs(json.loads(output)):
                if not artifacts.exists(ref[ARTIFACT_KEY], ref.get("suffix", "")):
                    report.stale_cache.append(key)
                    break
        if repair and report.stale_cache:
            store.forget_cached(report.stale_cache)
            report.cache_dropped = True
    finally:
        store.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
