"""The run store's tables, and the ordered migrations that bring an older store's schema
up to this version (``MIGRATIONS[i]`` goes from version i to i + 1)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from fanflow.stores.errors import RunStoreError
from fanflow.stores.plain_sqlite import SCHEMA_VERSION  # this version's schema as SQLite text is there too

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


# Which engine owns a run it continues (resume, serve): one row per run being continued.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),  # the run being continued
    sa.Column("owner", sa.String(64), nullable=False),  # the run continuing it
    sa.Column("host", sa.String(200)),
    sa.Column("pid", sa.Integer),
    sa.Column("taken", sa.Float),
)


# The latest progress a task reported while it ran (fanflow.progress): one row per task, for
# its latest attempt, with a bounded history of its metrics (JSON: [[time, done, {name:
# value}], ...]).
progress = sa.Table(
    "progress",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("task", sa.String(400), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("done", sa.Float),
    sa.Column("total", sa.Float),
    sa.Column("unit", sa.Text),
    sa.Column("metrics", sa.Text),  # JSON: the latest value of each metric
    sa.Column("message", sa.Text),
    sa.Column("history", sa.Text),
    sa.Column("updated", sa.Float),
)


def _migrate_to_1(conn) -> None:
    metadata.create_all(conn, tables=[runs, tasks, attempts, artifacts, lineage, cache])


def _migrate_to_2(conn) -> None:
    leases.create(conn, checkfirst=True)


def _migrate_to_3(conn) -> None:
    progress.create(conn, checkfirst=True)


MIGRATIONS = [_migrate_to_1, _migrate_to_2, _migrate_to_3]  # MIGRATIONS[i] brings the schema from version i to i + 1


def migrate(engine: sa.Engine, url: str) -> None:
    """Create or upgrade the schema; retried while another process does the same."""
    for attempt in range(5):
        try:
            return _migrate_once(engine, url)
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == 4:  # another process was creating the same tables: look again
                raise
            time.sleep(0.2 * (attempt + 1))


def _migrate_once(engine: sa.Engine, url: str) -> None:
    with engine.begin() as conn:
        meta_table.create(conn, checkfirst=True)
        row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RunStoreError(
                f"the run store at {url} has schema version {version}; this fanflow "
                f"knows up to {SCHEMA_VERSION}: upgrade fanflow"
            )
        for step in MIGRATIONS[version:]:
            step(conn)
        if version != SCHEMA_VERSION:
            if row:
                conn.execute(
                    meta_table.update()
                    .where(meta_table.c.key == "schema_version")
                    .values(value=str(SCHEMA_VERSION))
                )
            else:
                conn.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
