"""The run store: every run, task, attempt, artifact and cache entry, in a SQL database.

SQLite in the project folder by default (WAL mode, nothing to set up); any SQLAlchemy URL
(PostgreSQL, ...) through ``FANFLOW_DB``. The schema carries a version number and is
migrated forward on open by the ordered steps in ``MIGRATIONS``. A damaged or full database
raises ``RunStoreError`` saying what to do, never a driver's traceback; a file that is not a
run store is refused, not reused (see ``dbfile``).

A run that continues another (resume, serve) holds a lease on it from ``begin`` to
``finish``, so two engines never continue the same run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fanflow.stores import dbfile, plain_sqlite
from fanflow.stores.errors import AmbiguousRun, RunLeased, RunNotFound
from fanflow.stores.recording import LOOKUP_CHUNK, PROGRESS_COLUMNS, RUN_COLUMNS, EventRows, Statement
from fanflow.vocab.imports import LazyModule
from fanflow.vocab.manifest import ARTIFACT_KEY, artifact_refs
from fanflow.vocab.progress import Progress
from fanflow.vocab.states import Event

HEARTBEAT_EVERY = 2.0  # seconds between a live engine's heartbeats
STALE_AFTER = 30.0  # a "running" run with no heartbeat for this long was interrupted
RUN_SORTS = ("started", "duration", "workflow", "state", "id")

# Imported when first used: a run on the default SQLite store needs neither (see plain_sqlite).
sa = LazyModule("sqlalchemy")
schema = LazyModule("fanflow.stores.schema")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    plain_sqlite.set_pragmas(dbapi_conn)


@dataclass
class RunRow:
    id: str
    workflow: str
    state: str
    started: float
    ended: float | None
    error: str | None
    params: dict
    source: str | None
    executor: str | None
    resumed_from: str | None
    spec: dict
    home: str | None
    host: str | None = None  # where the engine ran, and its process id
    pid: int | None = None

    @property
    def duration(self) -> float | None:
        return (self.ended - self.started) if self.ended else None


def _engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)

    @sa.event.listens_for(engine, "handle_error")
    def _plain_error(context) -> None:
        problem = dbfile.failure(context.original_exception, url)
        if problem is not None:
            raise problem

    return engine


def create_store(url: str) -> None:
    """Create (or bring up to date) the tables of a run store at ``url``."""
    path = dbfile.sqlite_file(url)
    if path is not None and not path.exists():
        plain_sqlite.create(path)
        return
    engine = _engine(url)
    try:
        schema.migrate(engine, url)
    finally:
        engine.dispose()


class RunStore:
    """The run store at ``url``. On the default SQLite file, what a run writes goes through
    ``sqlite3`` and the statements of ``plain_sqlite``; SQLAlchemy (``engine``) is made, and
    imported, when something first asks a question of the store."""

    def __init__(self, url: str):
        self.url = url
        self._file = dbfile.sqlite_file(url)
        if self._file is not None:
            if self._file.exists():
                dbfile.refuse_if_foreign(self._file)
            else:
                dbfile.create_whole(self._file, create_store)
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._last_beat = 0.0
        self._seq: dict[str, int] = {}
        self._raw = None
        self._statements: dict[str, Statement] = {}
        self._started: dict[str, dict[str, float]] = {}  # run -> task -> when its attempt started
        self._waiting: dict[str, dict[str, list]] = {}  # run -> rows of tasks not written yet
        self._keepalive: tuple[threading.Thread, threading.Event] | None = None
        self._migrate()

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = _engine(self.url)
        return self._engine

    # -- schema -------------------------------------------------------------------------
    def _migrate(self) -> None:
        if self._file is not None:
            try:
                current = plain_sqlite.version(self._raw_connection())
            except Exception as exc:
                raise self._plain(exc) from None
            if current == plain_sqlite.SCHEMA_VERSION:
                return
        schema.migrate(self.engine, self.url)

    def _plain(self, exc: BaseException) -> BaseException:
        """A database failure as the store's own error (see ``dbfile.failure``)."""
        return dbfile.failure(exc, self.url) or exc

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(schema.meta_table.c.value).where(schema.meta_table.c.key == "schema_version")
                ).scalar_one()
            )

    def close(self) -> None:
        self._stop_keepalive()
        self._release_connections()
        if self._engine is not None:
            self._engine.dispose()

    def _release_connections(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    # -- recording (the engine's Recorder) ----------------------------------------------
    def begin(self, run) -> None:
        spec = run.workflow.model_dump(mode="json", by_alias=True, exclude_none=True)
        spec["import_paths"] = run.workflow.import_paths  # where sub-workflows' modules live
        row = (run.run_id, run.workflow.name, run.workflow.source, json.dumps(spec),
               json.dumps(run.params, default=str), _code_version(run.workflow.source), run.executor, run.home,
               "running", run.started, time.time(), socket.gethostname(), os.getpid(), run.resumed_from)
        if run.resumed_from:
            with self.engine.begin() as conn:  # the lease and the run's row in one transaction
                self._claim(conn, run.resumed_from, run.run_id)
                conn.execute(schema.runs.insert().values(dict(zip(RUN_COLUMNS, row, strict=True))))
        else:
            self._write([("run_new", [row])])
        self._start_keepalive(run.run_id)

    def _claim(self, conn, target: str, owner: str) -> None:
        """Take the lease on ``target`` for the run ``owner``, or raise RunLeased naming the
        live engine that holds it. The insert comes first so that SQLite takes its write lock
        before reading: two engines claiming at once are serialised, never both let in."""
        mine = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "taken": time.time()}
        if _claim_new(conn, target, mine):
            return
        held = conn.execute(sa.select(schema.leases).where(schema.leases.c.run_id == target)).mappings().one()
        holder = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == held["owner"])).mappings().first()
        if holder is not None and holder["state"] == "running" and not self._is_dead(holder):
            raise RunLeased(
                f"run {target} is already being continued by run {held['owner']} (pid {held['pid']} "
                f"on {held['host']}): wait for it to end, or stop it first"
            )
        taken = conn.execute(
            schema.leases.update()
            .where(schema.leases.c.run_id == target, schema.leases.c.owner == held["owner"])
            .values(**mine)
        )
        if taken.rowcount != 1:
            raise RunLeased(f"run {target} was claimed by another engine just now")

    def lease_holder(self, target: str) -> RunRow | None:
        """The live run that holds the lease on ``target``, if any."""
        with self.engine.connect() as conn:
            owner = conn.execute(sa.select(schema.leases.c.owner).where(schema.leases.c.run_id == target)).scalar()
            row = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == owner)).mappings().first() if owner else None
        if row is None or row["state"] != "running" or self._is_dead(row):
            return None
        return self._run_row(row)

    def _start_keepalive(self, run_id: str) -> None:
        """Renew the run's heartbeat while its engine lives, even while no task changes state
        (a long training task), so that no other engine takes it for dead."""
        self._stop_keepalive()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_EVERY):
                if time.time() - self._last_beat > HEARTBEAT_EVERY:
                    with contextlib.suppress(Exception):  # the next record says what is wrong
                        self.heartbeat(run_id, own_connection=True)

        thread = threading.Thread(target=beat, name="fanflow-heartbeat", daemon=True)
        thread.start()
        self._keepalive = (thread, stop)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            thread, stop = self._keepalive
            stop.set()
            thread.join()
            self._keepalive = None

    def record(self, run_id: str, events: list[Event], *, ending: bool = False) -> None:
        """Write a batch of state changes in one transaction, committed before returning.

        This is the engine's hot path (thousands of tasks a second), so it uses statements
        compiled once per database and the driver's executemany. A task handed out that has
        not started yet is written with its next change (its start, usually): a pending task
        is nothing the engine has acted on; ``ending`` writes those left."""
        if run_id not in self._seq:
            self._seq[run_id] = self._next_seq(run_id)
        rows = EventRows(run_id, self._seq[run_id], self._started.setdefault(run_id, {}),
                         self._waiting.setdefault(run_id, {}))
        for event in events:
            rows.add(event)
        if ending:
            rows.unwritten()
        self._seq[run_id] = rows.seq
        batches = list(rows.in_order())
        now = time.time()
        if now - self._last_beat > HEARTBEAT_EVERY:
            self._last_beat = now
            batches.append(("heartbeat", [(now, run_id)]))
        self._write(batches)

    def _write(self, batches: Iterable[tuple[str, list[tuple]]], raw=None) -> None:
        """Run each named statement over its rows (``executemany``), all in one transaction,
        committed before returning; a failure is the store's own error."""
        raw = raw or self._raw_connection()
        cursor = raw.cursor()
        try:
            for name, params in batches:
                if params:
                    statement = self._prepared(name)
                    cursor.executemany(statement.sql, statement.params(params))
            raw.commit()
        except BaseException as exc:
            with contextlib.suppress(Exception):  # a damaged or full database may refuse this too
                raw.rollback()
            problem = self._plain(exc)
            if problem is exc:
                raise
            raise problem from None
        finally:
            cursor.close()

    def _raw_connection(self):
        """The DB-API connection that a run's writes and the cache's lookups go through."""
        if self._raw is None:
            self._raw = self._new_raw_connection()
        return self._raw

    def _new_raw_connection(self):
        if self._file is not None:
            return plain_sqlite.connect(self._file)
        return self.engine.raw_connection()

    def _prepared(self, name: str) -> Statement:
        statement = self._statements.get(name)
        if statement is None:
            dialect = None if self._file is not None else self.engine.dialect
            statement = self._statements[name] = Statement(name, dialect)
        return statement

    def _next_seq(self, run_id: str) -> int:
        statement = self._prepared("task_count")
        raw = self._raw_connection()
        cursor = raw.cursor()
        try:
            cursor.execute(statement.sql, statement.params([(run_id,)])[0])
            count = cursor.fetchone()[0]
            raw.commit()
        except Exception as exc:
            raise self._plain(exc) from None
        finally:
            cursor.close()
        return count

    def heartbeat(self, run_id: str, own_connection: bool = False) -> None:
        """Say that the run's engine lives; ``own_connection`` for a thread other than the one
        that records the run."""
        now = time.time()
        if own_connection:
            raw = self._new_raw_connection()
            try:
                self._write([("heartbeat", [(now, run_id)])], raw)
            finally:
                raw.close()
        else:
            self._write([("heartbeat", [(now, run_id)])])
        self._last_beat = now

    def finish(self, run_id: str, state: str, error: str | None, ended: float) -> None:
        self._stop_keepalive()
        if self._waiting.get(run_id):
            self.record(run_id, [], ending=True)
        self._waiting.pop(run_id, None)
        self._started.pop(run_id, None)
        self._write([("run_end", [(state, error, ended, run_id)]), ("lease_end", [(run_id,)])])
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the cache (the engine's Memo) --------------------------------------------------
    def cached_outputs(self, keys: Iterable[str]) -> dict[str, Any]:
        """The cached output of each of ``keys`` that has one, looked up a chunk of keys
        per statement."""
        keys = list(keys)
        found: dict[str, Any] = {}
        statement = self._prepared("cache_lookup")
        raw = self._raw_connection()
        cursor = raw.cursor()
        try:
            for first in range(0, len(keys), LOOKUP_CHUNK):
                chunk = keys[first : first + LOOKUP_CHUNK]
                chunk += [chunk[0]] * (LOOKUP_CHUNK - len(chunk))  # one statement for every chunk
                cursor.execute(statement.sql, statement.params([tuple(chunk)])[0])
                for key, output in cursor.fetchall():
                    found[key] = json.loads(output)
            raw.commit()
        except Exception as exc:
            problem = self._plain(exc)
            if problem is exc:
                raise
            raise problem from None
        finally:
            cursor.close()
        return found

    def forget_cached(self, keys: Iterable[str]) -> None:
        """Drop cache entries (their artifacts are gone or damaged)."""
        keys = list(keys)
        with self.engine.begin() as conn:
            for start in range(0, len(keys), 500):
                conn.execute(schema.cache.delete().where(schema.cache.c.key.in_(keys[start : start + 500])))

    # -- reading ------------------------------------------------------------------------
    def find_run(self, ref: str) -> RunRow:
        """The run ``ref`` names: its id, a unique prefix of it, or ``latest``. Raises
        RunNotFound, or AmbiguousRun listing the runs a prefix matches."""
        with self.engine.connect() as conn:
            if ref == "latest":
                row = conn.execute(sa.select(schema.runs).order_by(schema.runs.c.started.desc()).limit(1)).mappings().first()
                if row is None:
                    raise RunNotFound(f"no runs yet in {self._where()}")
                return self._run_row(row)
            row = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == ref)).mappings().first()
            if row is not None:
                return self._run_row(row)
            pattern = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = conn.execute(
                sa.select(schema.runs.c.id, schema.runs.c.workflow, schema.runs.c.state)
                .where(schema.runs.c.id.like(pattern, escape="\\"))
                .order_by(schema.runs.c.started.desc())
                .limit(11)
            ).all()
            if len(rows) == 1:
                row = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == rows[0].id)).mappings().first()
                return self._run_row(row)
        if not rows:
            raise RunNotFound(f"no run {ref!r} in {self._where()} (see: fanflow runs)")
        listed = [f"{r.id} ({r.workflow}, {r.state})" for r in rows[:10]]
        more = " and more" if len(rows) > 10 else ""
        raise AmbiguousRun(
            f"{ref!r} matches several runs: {'; '.join(listed)}{more}; give more of the id",
            [r.id for r in rows[:10]],
        )

    def get_run(self, ref: str) -> RunRow | None:
        """Like ``find_run``, but None when no run matches (an ambiguous prefix still raises)."""
        try:
            return self.find_run(ref)
        except AmbiguousRun:
            raise
        except RunNotFound:
            return None

    def _where(self) -> str:
        return str(dbfile.sqlite_file(self.url) or self.url.split("@")[-1])

    def list_runs(self, limit: int = 20, workflow: str | None = None) -> list[RunRow]:
        query = sa.select(schema.runs).order_by(schema.runs.c.started.desc()).limit(limit)
        if workflow:
            query = query.where(schema.runs.c.workflow == workflow)
        with self.engine.connect() as conn:
            return [self._run_row(r) for r in conn.execute(query).mappings()]

    def find_runs(
        self,
        limit: int = 100,
        *,
        offset: int = 0,
        workflow: str | None = None,
        states: Iterable[str] = (),
        text: str | None = None,
        sort: str = "started",
        descending: bool = True,
        ids: Iterable[str] | None = None,
    ) -> list[RunRow]:
        """Runs matching every filter given: a workflow, any of ``states`` (a run whose
        engine died reads "interrupted"), ``text`` found in the id, workflow, parameters or
        error, or only the runs ``ids``; sorted by ``sort`` (one of ``RUN_SORTS``)."""
        if sort not in RUN_SORTS:
            raise ValueError(f"cannot sort runs by {sort!r} (expected one of {', '.join(RUN_SORTS)})")
        query = sa.select(schema.runs)
        if ids is not None:
            query = query.where(schema.runs.c.id.in_(list(ids)))
        if workflow:
            query = query.where(schema.runs.c.workflow == workflow)
        states = set(states)
        if states:
            stored = states - {"interrupted"} | ({"running"} if "interrupted" in states else set())
            query = query.where(schema.runs.c.state.in_(sorted(stored)))
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(sa.or_(*(column.like(pattern, escape="\\") for column in
                                         (schema.runs.c.id, schema.runs.c.workflow, schema.runs.c.params, schema.runs.c.error))))
        key = {
            "started": schema.runs.c.started,
            "duration": sa.func.coalesce(schema.runs.c.ended, sa.func.coalesce(schema.runs.c.heartbeat, schema.runs.c.started))
            - schema.runs.c.started,
            "workflow": schema.runs.c.workflow,
            "state": schema.runs.c.state,
            "id": schema.runs.c.id,
        }[sort]
        query = query.order_by(key.desc() if descending else key.asc(), schema.runs.c.started.desc())
        with self.engine.connect() as conn:
            found = [self._run_row(r) for r in conn.execute(query.limit(None if states else limit)
                                                            .offset(0 if states else offset)).mappings()]
        if states:  # "running" and "interrupted" are told apart only once read
            found = [row for row in found if row.state in states][offset : offset + limit]
        return found

    def runs_changed_since(self, since: float) -> list[RunRow]:
        """Runs started or ended since ``since``, and every run still recorded as running."""
        query = sa.select(schema.runs).where(
            sa.or_(schema.runs.c.state == "running", schema.runs.c.started >= since, schema.runs.c.ended >= since)
        )
        with self.engine.connect() as conn:
            return [self._run_row(r) for r in conn.execute(query).mappings()]

    def workflow_sources(self) -> list[tuple[str, str]]:
        """(workflow, source file) of every workflow run from a file, most recent first."""
        query = (
            sa.select(schema.runs.c.workflow, schema.runs.c.source, sa.func.max(schema.runs.c.started).label("last"))
            .where(schema.runs.c.source.is_not(None))
            .group_by(schema.runs.c.workflow, schema.runs.c.source)
            .order_by(sa.desc("last"))
        )
        with self.engine.connect() as conn:
            return [(r.workflow, r.source) for r in conn.execute(query)]

    def task_counts(self, run_ids: list[str]) -> dict[str, dict[str, int]]:
        """How many tasks of each run are in each state."""
        found: dict[str, dict[str, int]] = {run_id: {} for run_id in run_ids}
        with self.engine.connect() as conn:
            for start in range(0, len(run_ids), 500):
                query = (
                    sa.select(schema.tasks.c.run_id, schema.tasks.c.state, sa.func.count())
                    .where(schema.tasks.c.run_id.in_(run_ids[start : start + 500]))
                    .group_by(schema.tasks.c.run_id, schema.tasks.c.state)
                )
                for run_id, state, count in conn.execute(query):
                    found[run_id][state] = count
        return found

    def task_states(self, run_id: str, *, since: float | None = None, created: int = 0,
                    cached: bool | None = None) -> list[tuple]:
        """A run's tasks as (name, step, state, attempts, started, ended, cached), in creation
        order: what a live view compares from one moment to the next. With ``since``, only
        those that may have changed since then: created after the first ``created`` tasks,
        started or ended since, or in a state that moves on without a time (running,
        retrying, serving). With ``cached``, only those reused (or not)."""
        columns = (schema.tasks.c.name, schema.tasks.c.step, schema.tasks.c.state, schema.tasks.c.attempts, schema.tasks.c.started,
                   schema.tasks.c.ended, schema.tasks.c.cached)
        query = sa.select(*columns).where(schema.tasks.c.run_id == run_id)
        if since is not None:
            query = query.where(sa.or_(schema.tasks.c.seq >= created, schema.tasks.c.state.in_(["running", "retrying", "serving"]),
                                       schema.tasks.c.started >= since, schema.tasks.c.ended >= since))
        if cached is not None:
            query = query.where(schema.tasks.c.cached == cached)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query.order_by(schema.tasks.c.seq))]

    def attempt_spans(self, run_id: str, since: float | None = None) -> list[tuple]:
        """A run's attempts as (task, attempt, worker, started, ended, state), oldest first;
        with ``since``, only those still going or that started or ended since then."""
        query = sa.select(schema.attempts.c.task, schema.attempts.c.attempt, schema.attempts.c.worker, schema.attempts.c.started,
                          schema.attempts.c.ended, schema.attempts.c.state).where(schema.attempts.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(_since(query, since).order_by(schema.attempts.c.started))]

    def _run_row(self, row) -> RunRow:
        state = row["state"]
        if state == "running" and self._is_dead(row):
            state = "interrupted"
        return RunRow(
            row["id"],
            row["workflow"],
            state,
            row["started"],
            row["ended"],
            row["error"],
            json.loads(row["params"]),
            row["source"],
            row["executor"],
            row["resumed_from"],
            json.loads(row["spec"]),
            row["home"],
            row["host"],
            row["pid"],
        )

    @staticmethod
    def _is_dead(row) -> bool:
        """A run left "running" by an engine that no longer lives (killed, machine died)."""
        if row["host"] == socket.gethostname() and row["pid"]:
            try:
                os.kill(row["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
            else:
                # The pid lives, but it may have been reused: trust a fresh heartbeat only.
                return (time.time() - (row["heartbeat"] or 0)) > STALE_AFTER and not _is_fanflow(row["pid"])
        return (time.time() - (row["heartbeat"] or 0)) > STALE_AFTER

    def tasks(
        self,
        run_id: str,
        step: str | None = None,
        *,
        names: Iterable[str] | None = None,
        states: Iterable[str] = (),
        notable: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict]:
        """A run's tasks in creation order: all of them, or one step's, only those named,
        only those in ``states``, a page of them; ``notable`` keeps only the tasks that did not
        simply succeed on their first attempt."""
        query = sa.select(schema.tasks).where(schema.tasks.c.run_id == run_id)
        if step is not None:
            query = query.where(schema.tasks.c.step == step)
        if names is not None:
            query = query.where(schema.tasks.c.name.in_(list(names)))
        if states:
            query = query.where(schema.tasks.c.state.in_(list(states)))
        if notable:
            query = query.where(sa.or_(schema.tasks.c.state != "succeeded", schema.tasks.c.attempts > 1))
        query = query.order_by(schema.tasks.c.seq).limit(limit).offset(offset or None)
        with self.engine.connect() as conn:
            return [_task_dict(r) for r in conn.execute(query).mappings()]

    def step_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """How many of each step's tasks are in each state, steps in the order they started."""
        query = (
            sa.select(schema.tasks.c.step, schema.tasks.c.state, sa.func.count(), sa.func.min(schema.tasks.c.seq))
            .where(schema.tasks.c.run_id == run_id)
            .group_by(schema.tasks.c.step, schema.tasks.c.state)
        )
        with self.engine.connect() as conn:
            rows = sorted(conn.execute(query), key=lambda row: row[3])
        counts: dict[str, dict[str, int]] = {}
        for step, state, count, _ in rows:
            counts.setdefault(step, {})[state] = count
        return counts

    def attempts(self, run_id: str, task: str | None = None, since: float | None = None) -> list[dict]:
        """A run's attempts (or one task's), oldest first; with ``since``, only those still
        going or that started or ended since then."""
        query = sa.select(schema.attempts).where(schema.attempts.c.run_id == run_id)
        if task:
            query = query.where(schema.attempts.c.task == task)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(_since(query, since).order_by(schema.attempts.c.started)).mappings()]

    def lineage(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(sa.select(schema.lineage).where(schema.lineage.c.run_id == run_id)).mappings()
            ]

    # -- progress (what running tasks report) --------------------------------------------
    def record_progress(self, run_id: str, progress: list[tuple[str, Progress]]) -> None:
        """Keep the latest progress of these tasks, each replacing what the task had (a row
        per task), in one transaction."""
        rows = []
        for task, p in progress:
            columns = {"run_id": run_id, "task": task, **p.columns()}
            rows.append(tuple(columns[c] for c in PROGRESS_COLUMNS))
        self._write([("progress_drop", [(run_id, task) for task, _ in progress]), ("progress_new", rows)])

    def progress(self, run_id: str, task: str | None = None) -> dict[str, Progress]:
        """The latest progress that a run's tasks (or one task) reported, by task."""
        query = sa.select(schema.progress).where(schema.progress.c.run_id == run_id)
        if task is not None:
            query = query.where(schema.progress.c.task == task)
        with self.engine.connect() as conn:
            return {row["task"]: Progress.from_columns(row) for row in conn.execute(query).mappings()}

    def task_state(self, run_id: str, name: str) -> tuple[str, int] | None:
        """One task's state and number of attempts, or None if the run has no such task."""
        query = sa.select(schema.tasks.c.state, schema.tasks.c.attempts).where(schema.tasks.c.run_id == run_id, schema.tasks.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row[0], row[1]) if row else None

    def mark_interrupted(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                schema.runs.update()
                .where(schema.runs.c.id == run_id, schema.runs.c.state == "running")
                .values(state="interrupted", ended=time.time(), error="the engine stopped (killed?)")
            )
            conn.execute(
                schema.tasks.update()
                .where(schema.tasks.c.run_id == run_id, schema.tasks.c.state.in_(["running", "pending", "retrying"]))
                .values(state="cancelled", reason="the engine stopped")
            )

    # -- garbage collection -------------------------------------------------------------
    def delete_runs(self, run_ids: list[str]) -> None:
        with self.engine.begin() as conn:
            for table, column in (
                (schema.progress, schema.progress.c.run_id),
                (schema.lineage, schema.lineage.c.run_id),
                (schema.attempts, schema.attempts.c.run_id),
                (schema.tasks, schema.tasks.c.run_id),
                (schema.cache, schema.cache.c.run_id),
                (schema.runs, schema.runs.c.id),
            ):
                conn.execute(table.delete().where(column.in_(run_ids)))

    def referenced_digests(self) -> set[str]:
        """Every artifact a remaining run or cache entry points to."""
        digests: set[str] = set()
        with self.engine.connect() as conn:
            digests |= {r[0] for r in conn.execute(sa.select(schema.lineage.c.digest).distinct())}
            for (output,) in conn.execute(sa.select(schema.cache.c.output)):
                digests |= {ref[ARTIFACT_KEY] for ref in artifact_refs(json.loads(output))}
        return digests

    def cached_digests(self, exclude_runs: set[str] = frozenset()) -> set[str]:
        digests: set[str] = set()
        with self.engine.connect() as conn:
            for run_id, output in conn.execute(sa.select(schema.cache.c.run_id, schema.cache.c.output)):
                if run_id not in exclude_runs:
                    digests |= {ref[ARTIFACT_KEY] for ref in artifact_refs(json.loads(output))}
        return digests

    def forget_artifacts(self, digests: Iterable[str]) -> None:
        digests = list(digests)
        with self.engine.begin() as conn:
            for start in range(0, len(digests), 500):
                conn.execute(schema.artifacts.delete().where(schema.artifacts.c.digest.in_(digests[start : start + 500])))


def _claim_new(conn, target: str, mine: dict) -> bool:
    """Insert the lease row unless one is there; whether it was inserted."""
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        insert = __import__(f"sqlalchemy.dialects.{name}", fromlist=["insert"]).insert
        return conn.execute(insert(schema.leases).values(run_id=target, **mine).on_conflict_do_nothing()).rowcount == 1
    try:
        with conn.begin_nested():
            conn.execute(schema.leases.insert().values(run_id=target, **mine))
    except sa.exc.IntegrityError:
        return False
    return True


def _since(query, since: float | None):
    """Only the attempts still going, or that started or ended since ``since``."""
    if since is None:
        return query
    return query.where(sa.or_(schema.attempts.c.ended.is_(None), schema.attempts.c.ended >= since, schema.attempts.c.started >= since))


def _task_dict(row) -> dict:
    data = dict(row)
    data["item"] = json.loads(data["item"]) if data["item"] else None
    data["output"] = json.loads(data["output"]) if data["output"] else None
    return data


def _is_fanflow(pid: int) -> bool:
    try:
        import psutil

        return any("fanflow" in part for part in psutil.Process(pid).cmdline())
    except Exception:
        return False


def _code_version(source: str | None) -> str | None:
    """The git commit of the workflow's folder, with '+dirty' when it has changes."""
    if not source:
        return None
    import subprocess

    folder = os.path.dirname(os.path.abspath(source))
    try:
        commit = subprocess.run(
            ["git", "-C", folder, "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
