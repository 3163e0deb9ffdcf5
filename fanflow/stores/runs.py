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

from fanflow.engine.core import Event, State
from fanflow.stores.values import ARTIFACT_KEY, artifact_refs

SCHEMA_VERSION = 1
HEARTBEAT_EVERY = 2.0  # seconds between a live engine's heartbeats
STALE_AFTER = 30.0  # a "running" run with no heartbeat for this long was interrupted

metadata = sa.MetaData()

meta_table = sa.Table(
    "fanflow_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workflow", sa.String(200), nullable=False, index=True),
    sa.Column("source", sa.Text),
    sa.Column("spec", sa.Text, nullable=False),  # the validated workflow, as JSON
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("code_version", sa.String(80)),
    sa.Column("executor", sa.String(40)),
    sa.Column("home", sa.Text),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("error", sa.Text),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("ended", sa.Float),
    sa.Column("heartbeat", sa.Float),
    sa.Column("host", sa.String(200)),
    sa.Column("pid", sa.Integer),
    sa.Column("resumed_from", sa.String(64)),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(400), primary_key=True),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # creation order, for display
    sa.Column("item", sa.Text),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("output", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("cached", sa.Boolean, nullable=False, default=False),
    sa.Column("cache_key", sa.String(80)),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("task", sa.String(400), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("exit_reason", sa.String(40)),
    sa.Column("error", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("worker", sa.String(200)),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("digest", sa.String(80), primary_key=True),
    sa.Column("format", sa.String(20)),
    sa.Column("suffix", sa.String(20)),
    sa.Column("size", sa.BigInteger),
    sa.Column("created", sa.Float),
)

lineage = sa.Table(
    "lineage",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("task", sa.String(400), primary_key=True),
    sa.Column("digest", sa.String(80), primary_key=True),
    sa.Column("role", sa.String(10), primary_key=True),  # input / output
)

cache = sa.Table(
    "cache",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("task", sa.String(400)),
    sa.Column("created", sa.Float),
)


def _migrate_to_1(conn) -> None:
    metadata.create_all(conn)


MIGRATIONS = [_migrate_to_1]  # MIGRATIONS[i] brings the schema from version i to i + 1


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
        self._statements: dict[str, _Prepared] = {}
        self._migrate()

    # -- schema -------------------------------------------------------------------------
    def _migrate(self) -> None:
        for attempt in range(5):
            try:
                return self._migrate_once()
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
                if attempt == 4:  # another process was creating the same tables: look again
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _migrate_once(self) -> None:
        with self.engine.begin() as conn:
            meta_table.create(conn, checkfirst=True)
            row = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the run store at {self.url} has schema version {version}; this fanflow "
                    f"knows up to {SCHEMA_VERSION}: upgrade fanflow"
                )
            for step in MIGRATIONS[version:]:
                step(conn)
            if version != SCHEMA_VERSION:
                values = {"key": "schema_version", "value": str(SCHEMA_VERSION)}
                if row:
                    conn.execute(
                        meta_table.update()
                        .where(meta_table.c.key == "schema_version")
                        .values(value=values["value"])
                    )
                else:
                    conn.execute(meta_table.insert().values(**values))

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

    def record(self, run_id: str, events: list[Event]) -> None:
        """Write a batch of state changes in one transaction, committed before returning.

        This is the engine's hot path (thousands of tasks a second), so it uses statements
        compiled once per database and the driver's executemany."""
        if run_id not in self._seq:
            self._seq[run_id] = self._next_seq(run_id)
        rows = _Batch()
        for event in events:
            self._seq[run_id] += rows.add(run_id, event, self._seq[run_id])
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
                cursor.execute(beat.sql, beat.params([{"b_run": run_id, "b_time": now}])[0])
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

    def _prepared(self, name: str) -> _Prepared:
        statement = self._statements.get(name)
        if statement is None:
            statement = self._statements[name] = _Prepared(
                _statement(name, self.engine.dialect.name), self.engine.dialect
            )
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
        with self.engine.begin() as conn:
            conn.execute(
                runs.update().where(runs.c.id == run_id).values(state=state, error=error, ended=ended)
            )
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the cache (the engine's Memo) --------------------------------------------------
    def cached_outputs(self, keys: Iterable[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        statement = self._prepared("cache_lookup")
        raw = self._raw_connection()
        cursor = raw.cursor()
        try:
            for key in keys:
                cursor.execute(statement.sql, statement.params([{"b_key": key}])[0])
                row = cursor.fetchone()
                if row is not None:
                    found[key] = json.loads(row[0])
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

    def tasks(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks).where(tasks.c.run_id == run_id).order_by(tasks.c.seq)
            ).mappings()
            return [_task_dict(r) for r in rows]

    def attempts(self, run_id: str, task: str | None = None) -> list[dict]:
        query = sa.select(attempts).where(attempts.c.run_id == run_id)
        if task:
            query = query.where(attempts.c.task == task)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(attempts.c.started)).mappings()]

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


class _Prepared:
    """A statement compiled once for one database, run with the driver's executemany."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = compiled.positiontup if dialect.positional else None

    def params(self, rows: list[dict]) -> list:
        if self.order is None:
            return rows
        return [tuple(row[name] for name in self.order) for row in rows]


def _bind(table, names):
    return {name: sa.bindparam(name) for name in names}


def _insert_ignoring_duplicates(table, dialect_name: str):
    columns = [c.name for c in table.columns]
    if dialect_name in ("sqlite", "postgresql"):
        module = __import__(f"sqlalchemy.dialects.{dialect_name}", fromlist=["insert"])
        return module.insert(table).values(_bind(table, columns)).on_conflict_do_nothing()
    return table.insert().values(_bind(table, columns))


def _task_where(table, task_column):
    return sa.and_(table.c.run_id == sa.bindparam("b_run"), task_column == sa.bindparam("b_task"))


def _statement(name: str, dialect_name: str):
    if name == "task_new":
        return tasks.insert().values(_bind(tasks, _TASK_NEW_COLUMNS))
    if name == "task_running":
        return (
            tasks.update()
            .where(_task_where(tasks, tasks.c.name))
            .values(
                state=sa.bindparam("b_state"),
                attempts=sa.bindparam("b_attempts"),
                started=sa.func.coalesce(tasks.c.started, sa.bindparam("b_started")),
            )
        )
    if name == "task_finished":
        return (
            tasks.update()
            .where(_task_where(tasks, tasks.c.name))
            .values(
                state=sa.bindparam("b_state"),
                attempts=sa.bindparam("b_attempts"),
                output=sa.bindparam("b_output"),
                error=sa.bindparam("b_error"),
                reason=sa.bindparam("b_reason"),
                cached=sa.bindparam("b_cached"),
                cache_key=sa.func.coalesce(sa.bindparam("b_cache_key"), tasks.c.cache_key),
                ended=sa.func.coalesce(sa.bindparam("b_ended"), tasks.c.ended),
            )
        )
    if name == "attempt_new":
        return attempts.insert().values(_bind(attempts, [c.name for c in attempts.columns]))
    if name == "attempt_end":
        return (
            attempts.update()
            .where(_task_where(attempts, attempts.c.task), attempts.c.attempt == sa.bindparam("b_attempt"))
            .values(
                state=sa.bindparam("b_state"),
                ended=sa.bindparam("b_ended"),
                exit_reason=sa.bindparam("b_exit_reason"),
                error=sa.bindparam("b_error"),
                traceback=sa.bindparam("b_traceback"),
                worker=sa.bindparam("b_worker"),
            )
        )
    if name == "cache_lookup":
        return sa.select(cache.c.output).where(cache.c.key == sa.bindparam("b_key"))
    if name == "heartbeat":
        return (
            runs.update().where(runs.c.id == sa.bindparam("b_run")).values(heartbeat=sa.bindparam("b_time"))
        )
    table = {"artifact": artifacts, "lineage": lineage, "cache": cache}[name]
    return _insert_ignoring_duplicates(table, dialect_name)


_TASK_NEW_COLUMNS = ["run_id", "name", "step", "seq", "item", "state", "attempts", "cached"]
_TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


class _Batch:
    """The rows a batch of events turns into, by statement, in the order they must run."""

    ORDER = (
        "task_new",
        "task_running",
        "attempt_new",
        "task_finished",
        "attempt_end",
        "artifact",
        "lineage",
        "cache",
    )

    def __init__(self):
        self.rows: dict[str, list] = {name: [] for name in self.ORDER}
        self._artifacts: set[str] = set()
        self._lineage: set[tuple] = set()

    def in_order(self):
        return ((name, self.rows[name]) for name in self.ORDER)

    def add(self, run_id: str, e: Event, seq: int) -> int:
        """Add one event's rows; returns how many tasks it created (0 or 1)."""
        detail = e.detail
        if e.state is State.PENDING:
            item = json.dumps(detail["item"]) if "item" in detail else None
            self.rows["task_new"].append(
                {
                    "run_id": run_id,
                    "name": e.task,
                    "step": e.step,
                    "seq": seq,
                    "item": item,
                    "state": "pending",
                    "attempts": 0,
                    "cached": False,
                }
            )
            return 1
        restart = "restart" in detail
        if e.state is State.RUNNING or restart:
            self.rows["task_running"].append(
                {
                    "b_run": run_id,
                    "b_task": e.task,
                    "b_state": "running",
                    "b_attempts": e.attempt,
                    "b_started": e.time,
                }
            )
            self.rows["attempt_new"].append(
                {
                    "run_id": run_id,
                    "task": e.task,
                    "attempt": e.attempt,
                    "state": "running",
                    "started": e.time,
                    "ended": None,
                    "exit_reason": None,
                    "error": None,
                    "traceback": None,
                    "worker": None,
                }
            )
            if not restart:
                return 0
        output = detail.get("output")
        state = "serving" if restart else e.state.value
        self.rows["task_finished"].append(
            {
                "b_run": run_id,
                "b_task": e.task,
                "b_state": state,
                "b_attempts": e.attempt,
                "b_output": json.dumps(output) if output is not None else None,
                "b_error": detail.get("error"),
                "b_reason": detail.get("reason"),
                "b_cached": bool(detail.get("cached")),
                "b_cache_key": detail.get("cache_key"),
                "b_ended": e.time if state in _TERMINAL else None,
            }
        )
        if e.attempt and (restart or e.state is not State.SERVING):
            self.rows["attempt_end"].append(
                {
                    "b_run": run_id,
                    "b_task": e.task,
                    "b_attempt": e.attempt - 1 if restart else e.attempt,
                    "b_state": "exited" if restart else ("cached" if detail.get("cached") else state),
                    "b_ended": e.time,
                    "b_exit_reason": detail.get("exit_reason"),
                    "b_error": detail.get("error"),
                    "b_traceback": detail.get("traceback"),
                    "b_worker": detail.get("worker"),
                }
            )
        if e.state is State.SUCCEEDED and output is not None:
            self._outputs(run_id, e, output)
        return 0

    def _outputs(self, run_id: str, e: Event, output) -> None:
        for ref in artifact_refs(output):
            digest = ref[ARTIFACT_KEY]
            if digest not in self._artifacts:
                self._artifacts.add(digest)
                self.rows["artifact"].append(
                    {
                        "digest": digest,
                        "format": ref.get("format"),
                        "suffix": ref.get("suffix", ""),
                        "size": ref.get("size"),
                        "created": e.time,
                    }
                )
            self._link(run_id, e.task, digest, "output")
        for digest in e.detail.get("inputs", ()):
            self._link(run_id, e.task, digest, "input")
        if e.detail.get("cache_key") and not e.detail.get("cached"):
            self.rows["cache"].append(
                {
                    "key": e.detail["cache_key"],
                    "output": json.dumps(output),
                    "run_id": run_id,
                    "task": e.task,
                    "created": e.time,
                }
            )

    def _link(self, run_id: str, task: str, digest: str, role: str) -> None:
        key = (task, digest, role)
        if key not in self._lineage:
            self._lineage.add(key)
            self.rows["lineage"].append({"run_id": run_id, "task": task, "digest": digest, "role": role})


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
