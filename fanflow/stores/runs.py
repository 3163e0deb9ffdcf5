"""The run store: every run, task, attempt, artifact and cache entry, in a SQL database.

SQLite in the project folder by default (WAL mode, nothing to set up); any SQLAlchemy URL
(PostgreSQL, ...) through ``FANFLOW_DB``. The schema carries a version number and is
migrated forward on open by the ordered steps in ``MIGRATIONS``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fanflow.stores.recording import LOOKUP_CHUNK, EventRows, Statement
from fanflow.stores.schema import (
    artifacts,
    attempts,
    cache,
    lineage,
    meta_table,
    migrate,
    runs,
    tasks,
)
from fanflow.vocab.manifest import ARTIFACT_KEY, artifact_refs
from fanflow.vocab.states import Event

HEARTBEAT_EVERY = 2.0  # seconds between a live engine's heartbeats
STALE_AFTER = 30.0  # a "running" run with no heartbeat for this long was interrupted
RUN_SORTS = ("started", "duration", "workflow", "state", "id")


def default_url(home: str | os.PathLike) -> str:
    return os.environ.get("FANFLOW_DB") or f"sqlite:///{os.path.abspath(os.path.join(home, 'runs.db'))}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process
    cursor.execute("PRAGMA busy_timeout=30000")  # two engines on one file wait, never fail
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


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
    host: str | None = None  # where the engine runs (a live run can be cancelled there)
    pid: int | None = None

    @property
    def duration(self) -> float | None:
        return (self.ended - self.started) if self.ended else None


class RunStore:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(url.removeprefix("sqlite:///")) or ".", exist_ok=True)
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._conn: sa.Connection | None = None
        self._last_beat = 0.0
        self._seq: dict[str, int] = {}
        self._raw = None
        self._statements: dict[str, Statement] = {}
        self._started: dict[str, dict[str, float]] = {}  # run -> task -> when its attempt started
        self._waiting: dict[str, dict[str, list]] = {}  # run -> rows of tasks not written yet
        self._migrate()

    # -- schema -------------------------------------------------------------------------
    def _migrate(self) -> None:
        migrate(self.engine, self.url)

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
                ).scalar_one()
            )

    def close(self) -> None:
        self._release_connections()
        self.engine.dispose()

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
        with self.engine.begin() as conn:
            conn.execute(
                runs.insert().values(
                    id=run.run_id,
                    workflow=run.workflow.name,
                    source=run.workflow.source,
                    spec=json.dumps(spec),
                    params=json.dumps(run.params, default=str),
                    code_version=_code_version(run.workflow.source),
                    executor=run.executor,
                    home=run.home,
                    state="running",
                    started=run.started,
                    heartbeat=time.time(),
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    resumed_from=run.resumed_from,
                )
            )

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
        raw = self._raw_connection()
        cursor = raw.cursor()
        try:
            for name, params in rows.in_order():
                if params:
                    statement = self._prepared(name)
                    cursor.executemany(statement.sql, statement.params(params))
            now = time.time()
            if now - self._last_beat > HEARTBEAT_EVERY:
                self._last_beat = now
                beat = self._prepared("heartbeat")
                cursor.execute(beat.sql, beat.params([(now, run_id)])[0])
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            cursor.close()

    def _raw_connection(self):
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    def _prepared(self, name: str) -> Statement:
        statement = self._statements.get(name)
        if statement is None:
            statement = self._statements[name] = Statement(name, self.engine.dialect)
        return statement

    def _next_seq(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(tasks).where(tasks.c.run_id == run_id)
            ).scalar_one()

    def heartbeat(self, run_id: str) -> None:
        conn = self._connection()
        with conn.begin():
            conn.execute(runs.update().where(runs.c.id == run_id).values(heartbeat=time.time()))

    def finish(self, run_id: str, state: str, error: str | None, ended: float) -> None:
        if self._waiting.get(run_id):
            self.record(run_id, [], ending=True)
        self._waiting.pop(run_id, None)
        self._started.pop(run_id, None)
        with self.engine.begin() as conn:
            conn.execute(
                runs.update().where(runs.c.id == run_id).values(state=state, error=error, ended=ended)
            )
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
        finally:
            cursor.close()
        return found

    # -- reading ------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
            if row is None:  # a unique prefix is enough
                rows = conn.execute(sa.select(runs).where(runs.c.id.like(f"{run_id}%"))).mappings().all()
                row = rows[0] if len(rows) == 1 else None
        return self._run_row(row) if row else None

    def list_runs(self, limit: int = 20, workflow: str | None = None) -> list[RunRow]:
        query = sa.select(runs).order_by(runs.c.started.desc()).limit(limit)
        if workflow:
            query = query.where(runs.c.workflow == workflow)
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
        query = sa.select(runs)
        if ids is not None:
            query = query.where(runs.c.id.in_(list(ids)))
        if workflow:
            query = query.where(runs.c.workflow == workflow)
        states = set(states)
        if states:
            stored = states - {"interrupted"} | ({"running"} if "interrupted" in states else set())
            query = query.where(runs.c.state.in_(sorted(stored)))
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(sa.or_(*(column.like(pattern, escape="\\") for column in
                                         (runs.c.id, runs.c.workflow, runs.c.params, runs.c.error))))
        key = {
            "started": runs.c.started,
            "duration": sa.func.coalesce(runs.c.ended, sa.func.coalesce(runs.c.heartbeat, runs.c.started))
            - runs.c.started,
            "workflow": runs.c.workflow,
            "state": runs.c.state,
            "id": runs.c.id,
        }[sort]
        query = query.order_by(key.desc() if descending else key.asc(), runs.c.started.desc())
        with self.engine.connect() as conn:
            found = [self._run_row(r) for r in conn.execute(query.limit(None if states else limit)
                                                            .offset(0 if states else offset)).mappings()]
        if states:  # "running" and "interrupted" are told apart only once read
            found = [row for row in found if row.state in states][offset : offset + limit]
        return found

    def runs_changed_since(self, since: float) -> list[RunRow]:
        """Runs started or ended since ``since``, and every run still recorded as running."""
        query = sa.select(runs).where(
            sa.or_(runs.c.state == "running", runs.c.started >= since, runs.c.ended >= since)
        )
        with self.engine.connect() as conn:
            return [self._run_row(r) for r in conn.execute(query).mappings()]

    def workflow_sources(self) -> list[tuple[str, str]]:
        """(workflow, source file) of every workflow run from a file, most recent first."""
        query = (
            sa.select(runs.c.workflow, runs.c.source, sa.func.max(runs.c.started).label("last"))
            .where(runs.c.source.is_not(None))
            .group_by(runs.c.workflow, runs.c.source)
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
                    sa.select(tasks.c.run_id, tasks.c.state, sa.func.count())
                    .where(tasks.c.run_id.in_(run_ids[start : start + 500]))
                    .group_by(tasks.c.run_id, tasks.c.state)
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
        columns = (tasks.c.name, tasks.c.step, tasks.c.state, tasks.c.attempts, tasks.c.started,
                   tasks.c.ended, tasks.c.cached)
        query = sa.select(*columns).where(tasks.c.run_id == run_id)
        if since is not None:
            query = query.where(sa.or_(tasks.c.seq >= created, tasks.c.state.in_(["running", "retrying", "serving"]),
                                       tasks.c.started >= since, tasks.c.ended >= since))
        if cached is not None:
            query = query.where(tasks.c.cached == cached)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query.order_by(tasks.c.seq))]

    def attempt_spans(self, run_id: str, since: float | None = None) -> list[tuple]:
        """A run's attempts as (task, attempt, worker, started, ended, state), oldest first;
        with ``since``, only those still going or that started or ended since then."""
        query = sa.select(attempts.c.task, attempts.c.attempt, attempts.c.worker, attempts.c.started,
                          attempts.c.ended, attempts.c.state).where(attempts.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(_since(query, since).order_by(attempts.c.started))]

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
        query = sa.select(tasks).where(tasks.c.run_id == run_id)
        if step is not None:
            query = query.where(tasks.c.step == step)
        if names is not None:
            query = query.where(tasks.c.name.in_(list(names)))
        if states:
            query = query.where(tasks.c.state.in_(list(states)))
        if notable:
            query = query.where(sa.or_(tasks.c.state != "succeeded", tasks.c.attempts > 1))
        query = query.order_by(tasks.c.seq).limit(limit).offset(offset or None)
        with self.engine.connect() as conn:
            return [_task_dict(r) for r in conn.execute(query).mappings()]

    def step_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """How many of each step's tasks are in each state, steps in the order they started."""
        query = (
            sa.select(tasks.c.step, tasks.c.state, sa.func.count(), sa.func.min(tasks.c.seq))
            .where(tasks.c.run_id == run_id)
            .group_by(tasks.c.step, tasks.c.state)
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
        query = sa.select(attempts).where(attempts.c.run_id == run_id)
        if task:
            query = query.where(attempts.c.task == task)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(_since(query, since).order_by(attempts.c.started)).mappings()]

    def lineage(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(sa.select(lineage).where(lineage.c.run_id == run_id)).mappings()
            ]

    def mark_interrupted(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.state == "running")
                .values(state="interrupted", ended=time.time(), error="the engine stopped (killed?)")
            )
            conn.execute(
                tasks.update()
                .where(tasks.c.run_id == run_id, tasks.c.state.in_(["running", "pending", "retrying"]))
                .values(state="cancelled", reason="the engine stopped")
            )

    # -- garbage collection -------------------------------------------------------------
    def delete_runs(self, run_ids: list[str]) -> None:
        with self.engine.begin() as conn:
            for table, column in (
                (lineage, lineage.c.run_id),
                (attempts, attempts.c.run_id),
                (tasks, tasks.c.run_id),
                (cache, cache.c.run_id),
                (runs, runs.c.id),
            ):
                conn.execute(table.delete().where(column.in_(run_ids)))

    def referenced_digests(self) -> set[str]:
        """Every artifact a remaining run or cache entry points to."""
        digests: set[str] = set()
        with self.engine.connect() as conn:
            digests |= {r[0] for r in conn.execute(sa.select(lineage.c.digest).distinct())}
            for (output,) in conn.execute(sa.select(cache.c.output)):
                digests |= {ref[ARTIFACT_KEY] for ref in artifact_refs(json.loads(output))}
        return digests

    def cached_digests(self, exclude_runs: set[str] = frozenset()) -> set[str]:
        digests: set[str] = set()
        with self.engine.connect() as conn:
            for run_id, output in conn.execute(sa.select(cache.c.run_id, cache.c.output)):
                if run_id not in exclude_runs:
                    digests |= {ref[ARTIFACT_KEY] for ref in artifact_refs(json.loads(output))}
        return digests

    def forget_artifacts(self, digests: Iterable[str]) -> None:
        digests = list(digests)
        with self.engine.begin() as conn:
            for start in range(0, len(digests), 500):
                conn.execute(artifacts.delete().where(artifacts.c.digest.in_(digests[start : start + 500])))


def _since(query, since: float | None):
    """Only the attempts still going, or that started or ended since ``since``."""
    if since is None:
        return query
    return query.where(sa.or_(attempts.c.ended.is_(None), attempts.c.ended >= since, attempts.c.started >= since))


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
