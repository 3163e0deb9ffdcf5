"""The run store's SQLite file: created whole or not at all, refused when it is not a run
store (empty, another program's, not SQLite), and its failures (damaged pages, a full disk)
turned into one error that says what to do. ``check`` and ``salvage`` are what
``fanflow doctor`` runs on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fanflow.stores.errors import RunStoreError

SQLITE_HEADER = b"SQLite format 3\x00"
_OUR_TABLE = b"fanflow_meta"  # in the schema text on the first page of every run store
_PROBE_GAP = 2000  # rowids in a row that hold nothing readable: the end of a damaged table

DAMAGED_HINT = (
    "run `fanflow doctor` to check it, and `fanflow doctor --repair` to keep what can still be "
    "read in a new file (the damaged one is kept beside it)"
)


def default_url(home: str | os.PathLike) -> str:
    """The run store of the project whose folder is ``home``: ``$FANFLOW_DB`` when set."""
    return os.environ.get("FANFLOW_DB") or f"sqlite:///{os.path.abspath(os.path.join(home, 'runs.db'))}"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another database, or an in-memory one)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?")[0]
    return Path(path) if path and path != ":memory:" else None


# Files this process has checked, by (device, inode). Closing any descriptor of a file drops
# every POSIX lock the process holds on it, SQLite's own included, so once SQLite may have the
# file open in this process, reading its header through a descriptor of our own would let
# another process's checkpoint overwrite pages a reader here still relies on.
_checked: set[tuple[int, int]] = set()


def refuse_if_foreign(path: Path) -> None:
    """Refuse a file that is not a run store (empty, not SQLite, another program's database)
    or whose header is damaged, before anything writes to it. Once per file and process."""
    stat = path.stat()
    if (stat.st_dev, stat.st_ino) in _checked:
        return
    _inspect(path)
    _checked.add((stat.st_dev, stat.st_ino))


def _inspect(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise RunStoreError(
            f"{path} is empty (0 bytes), so it is not a fanflow run store (a run store is never "
            "empty): move it away, or let `fanflow doctor --repair` do so and start a new one"
        )
    with open(path, "rb") as f:
        head = f.read(65536)
    if not head.startswith(SQLITE_HEADER):
        if _OUR_TABLE in head:
            raise RunStoreError(f"the run store {path} is damaged (its header is not SQLite's): {DAMAGED_HINT}")
        raise RunStoreError(
            f"{path} is not a SQLite database, so not a fanflow run store: point --home or FANFLOW_DB elsewhere"
        )
    problems = header_problems(head[:100], size + _wal_size(path))
    if problems:
        raise RunStoreError(f"the run store {path} is damaged ({problems[0]}): {DAMAGED_HINT}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise (failure(exc, f"sqlite:///{path}") or RunStoreError(f"{path}: {exc}")) from None
    if names and "fanflow_meta" not in names:
        raise RunStoreError(
            f"{path} is a SQLite database of another program (tables: {', '.join(sorted(names)[:5])}), "
            "not a fanflow run store: point --home or FANFLOW_DB elsewhere"
        )


def _wal_size(path: Path) -> int:
    """Bytes in the write-ahead log: pages there are not yet in the file (a checkpoint the
    disk had no room for), so the file may be shorter than its header says."""
    try:
        return Path(f"{path}-wal").stat().st_size
    except OSError:
        return 0


def create_whole(path: Path, initialise: Callable[[str], None]) -> None:
    """Create a new store file atomically: ``initialise`` builds it under a temporary name,
    then it is linked into place, so no process ever sees a half-made (or 0-byte) store. When
    another process creates it first, theirs is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.new")
    try:
        initialise(f"sqlite:///{tmp}")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)


def failure(exc: BaseException, url: str) -> RunStoreError | None:
    """The store error a database exception stands for, or None when it is not one (a
    locked database, a bug)."""
    orig = getattr(exc, "orig", None) or exc
    name = getattr(orig, "sqlite_errorname", "") or ""
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
    text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    where = str(sqlite_file(url) or _hide_password(url))
    if name.startswith("SQLITE_FULL") or state == "53100" or "database or disk is full" in text:
        return RunStoreError(
            f"the disk holding the run store {where} is full ({_free(where)} free): free some space "
            "(`fanflow gc` drops old runs), then `fanflow resume RUN` continues where the run stopped"
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or state in ("XX001", "XX002"):
        return RunStoreError(f"the run store {where} is damaged ({text}): {DAMAGED_HINT}")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return RunStoreError(
            f"the run store {where} cannot be opened for writing ({text}): check that it and its "
            f"folder are writable; if they are, its header is damaged: {DAMAGED_HINT}"
        )
    if name.startswith("SQLITE_IOERR"):
        return RunStoreError(
            f"the run store {where} cannot be read or written ({text}; {_free(where)} free on its disk): "
            f"if the disk is full, free some space; otherwise {DAMAGED_HINT}"
        )
    return None


def _free(where: str) -> str:
    try:
        return f"{shutil.disk_usage(Path(where).parent).free / 1e6:.1f} MB"
    except OSError:
        return "unknown"


def _hide_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}"


# -- fanflow doctor ---------------------------------------------------------------------------
def header_problems(head: bytes, size: int) -> list[str]:
    """Fields of the 100-byte SQLite header that no sound file of ``size`` bytes has."""
    if len(head) < 100:
        return ["the file is shorter than a SQLite header"]
    problems = []
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        problems.append(f"the header's page size {page_size} is not a power of two from 512")
    elif head[24:28] == head[92:96] and int.from_bytes(head[28:32], "big") * page_size > size:
        pages = int.from_bytes(head[28:32], "big")
        problems.append(f"the file is cut short: {size // page_size} of its {pages} pages are there")
    if head[18] not in (1, 2) or head[19] not in (1, 2):
        problems.append(f"the header's file format versions ({head[18]}, {head[19]}) are not 1 or 2")
    if head[21:24] != bytes([64, 32, 32]):
        problems.append("the header's payload fractions are not 64, 32, 32")
    return problems


def check(path: Path) -> list[str]:
    """Problems SQLite finds in the whole file (``PRAGMA integrity_check``) and in its
    header; empty when sound."""
    try:
        _inspect(path)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except RunStoreError as exc:
        return [str(exc)]
    except sqlite3.DatabaseError as exc:
        return [f"{exc}"]
    return [] if rows == ["ok"] else rows


def salvage(path: Path, initialise: Callable[[str], None]) -> tuple[Path, dict[str, tuple[int, int]]]:
    """Move a damaged store aside and copy every row that can still be read into a new one
    built by ``initialise``. Returns where the damaged file went and, per table, (rows kept,
    rows lost)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    damaged = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, damaged)
    for extra in ("-wal", "-shm"):
        side = Path(f"{path}{extra}")
        if side.exists():
            os.replace(side, Path(f"{damaged}{extra}"))
    create_whole(path, initialise)
    counts: dict[str, tuple[int, int]] = {}
    if damaged.stat().st_size < 100:
        return damaged, counts
    source = _with_sound_header(damaged)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as old, \
                contextlib.closing(sqlite3.connect(path)) as new:
            for (table,) in new.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                if table == "fanflow_meta":
                    continue
                columns = [r[1] for r in new.execute(f'PRAGMA table_info("{table}")')]
                counts[table] = _copy_rows(old, new, table, columns)
            new.commit()
    except sqlite3.DatabaseError:
        pass  # nothing could be read: the new store stays empty
    finally:
        if source != damaged:
            source.unlink(missing_ok=True)
    return damaged, counts


def _with_sound_header(path: Path) -> Path:
    """The file itself when its header is sound, else a copy whose header fields that every
    run store has the same are set back (the magic text, format versions, fractions)."""
    with open(path, "rb") as f:
        head = bytearray(f.read(100))
    if head.startswith(SQLITE_HEADER) and not header_problems(bytes(head), path.stat().st_size + _wal_size(path)):
        return path
    head[:16] = SQLITE_HEADER
    page_size = int.from_bytes(head[16:18], "big")
    if page_size != 1 and (page_size < 512 or page_size & (page_size - 1)):
        head[16:18] = (4096).to_bytes(2, "big")  # SQLite's default, and what fanflow creates
    head[18:20] = bytes([1, 1])
    head[21:24] = bytes([64, 32, 32])
    head[28:32] = bytes(4)  # no page count: SQLite then counts the pages the file has
    copy = path.with_name(path.name + ".readable")
    shutil.copyfile(path, copy)
    with open(copy, "r+b") as f:
        f.write(head)
    return copy


def _copy_rows(old, new, table: str, columns: list[str]) -> tuple[int, int]:
    """Copy a table's readable rows: all at once when the table reads whole, else row by row
    (by rowid), skipping the rows on damaged pages."""
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    try:
        rows = old.execute(f'SELECT {names} FROM "{table}"').fetchall()
        new.executemany(insert, rows)
        return len(rows), 0
    except sqlite3.DatabaseError:
        pass
    kept = lost = gap = trailing = 0
    rowid = 0
    try:
        last = old.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()[0] or 0
    except sqlite3.DatabaseError:
        last = None  # the table's last page is damaged: go on until a long run of nothing
    while (rowid < last) if last is not None else (gap < _PROBE_GAP):
        rowid += 1
        try:
            row = old.execute(f'SELECT {names} FROM "{table}" WHERE rowid = ?', (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            lost += 1
            gap += 1
            trailing += 1
            continue
        if row is None:
            gap += 1
            continue
        gap = trailing = 0
        new.execute(insert, row)
        kept += 1
    return kept, lost - (trailing if last is None else 0)  # probes past the end lost nothing
