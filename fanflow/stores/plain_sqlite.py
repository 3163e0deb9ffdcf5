"""The default run store, a SQLite file, spoken to through Python's own ``sqlite3``: the schema
of this version and the statements a run writes with, as SQL text. A run on the default
store then never imports SQLAlchemy (a fifth of a second at every start); SQLAlchemy builds
the same statements for other databases (``recording.statement_for``), migrates older stores
(``schema``) and answers the queries of ``fanflow show``, the UI and the rest.

The tests check this text against what SQLAlchemy makes of ``schema``'s tables: the same
statements, and a store created here has the same tables, columns, keys and indexes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 3
LOOKUP_CHUNK = 256  # cache keys looked up by one statement

SCHEMA = (
    """CREATE TABLE fanflow_meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"))""",
    """CREATE TABLE runs (id VARCHAR(64) NOT NULL, workflow VARCHAR(200) NOT NULL, source TEXT,
        spec TEXT NOT NULL, params TEXT NOT NULL, code_version VARCHAR(80), executor VARCHAR(40), home TEXT,
        state VARCHAR(20) NOT NULL, error TEXT, started FLOAT NOT NULL, ended FLOAT, heartbeat FLOAT,
        host VARCHAR(200), pid INTEGER, resumed_from VARCHAR(64), PRIMARY KEY (id))""",
    "CREATE INDEX ix_runs_state ON runs (state)",
    "CREATE INDEX ix_runs_workflow ON runs (workflow)",
    """CREATE TABLE tasks (run_id VARCHAR(64) NOT NULL, name VARCHAR(400) NOT NULL, step VARCHAR(200) NOT NULL,
        seq INTEGER NOT NULL, item TEXT, state VARCHAR(20) NOT NULL, attempts INTEGER NOT NULL, output TEXT,
        error TEXT, reason TEXT, cached BOOLEAN NOT NULL, cache_key VARCHAR(80), started FLOAT, ended FLOAT,
        PRIMARY KEY (run_id, name), FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE)""",
    """CREATE TABLE attempts (run_id VARCHAR(64) NOT NULL, task VARCHAR(400) NOT NULL, attempt INTEGER NOT NULL,
        state VARCHAR(20) NOT NULL, started FLOAT, ended FLOAT, exit_reason VARCHAR(40), error TEXT,
        traceback TEXT, worker VARCHAR(200), PRIMARY KEY (run_id, task, attempt))""",
    """CREATE TABLE artifacts (digest VARCHAR(80) NOT NULL, format VARCHAR(20), suffix VARCHAR(20), size BIGINT,
        created FLOAT, PRIMARY KEY (digest))""",
    """CREATE TABLE lineage (run_id VARCHAR(64) NOT NULL, task VARCHAR(400) NOT NULL, digest VARCHAR(80) NOT NULL,
        role VARCHAR(10) NOT NULL, PRIMARY KEY (run_id, task, digest, role))""",
    """CREATE TABLE cache ("key" VARCHAR(80) NOT NULL, output TEXT NOT NULL, run_id VARCHAR(64),
        task VARCHAR(400), created FLOAT, PRIMARY KEY ("key"))""",
    """CREATE TABLE leases (run_id VARCHAR(64) NOT NULL, owner VARCHAR(64) NOT NULL, host VARCHAR(200),
        pid INTEGER, taken FLOAT, PRIMARY KEY (run_id))""",
    """CREATE TABLE progress (run_id VARCHAR(64) NOT NULL, task VARCHAR(400) NOT NULL, attempt INTEGER NOT NULL,
        done FLOAT, total FLOAT, unit TEXT, metrics TEXT, message TEXT, history TEXT, updated FLOAT,
        PRIMARY KEY (run_id, task))""",
)

# Each statement's parameters are in the order ``recording.statement_for`` names them.
STATEMENTS = {
    "task_new": "INSERT INTO tasks (run_id, name, step, seq, item, state, attempts, output, error, reason, "
                "cached, cache_key, started, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "task_change": "UPDATE tasks SET state=?, attempts=?, output=?, error=?, reason=?, cached=?, "
                   "cache_key=coalesce(?, tasks.cache_key), started=coalesce(tasks.started, ?), ended=? "
                   "WHERE tasks.run_id = ? AND tasks.name = ?",
    "attempt": "INSERT INTO attempts (run_id, task, attempt, state, started, ended, exit_reason, error, "
               "traceback, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "artifact": "INSERT INTO artifacts (digest, format, suffix, size, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
    "lineage": "INSERT INTO lineage (run_id, task, digest, role) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    "cache": 'INSERT INTO cache ("key", output, run_id, task, created) VALUES (?, ?, ?, ?, ?) '
             "ON CONFLICT DO NOTHING",
    "heartbeat": "UPDATE runs SET heartbeat=? WHERE runs.id = ?",
    "run_new": "INSERT INTO runs (id, workflow, source, spec, params, code_version, executor, home, state, "
               "started, heartbeat, host, pid, resumed_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "run_end": "UPDATE runs SET state=?, error=?, ended=? WHERE runs.id = ?",
    "lease_end": "DELETE FROM leases WHERE leases.owner = ?",
    "task_count": "SELECT count(*) AS count_1 \nFROM tasks \nWHERE tasks.run_id = ?",
    "cache_lookup": 'SELECT cache."key", cache.output \nFROM cache \nWHERE cache."key" IN ('
                    + ", ".join("?" * LOOKUP_CHUNK) + ")",
    "progress_drop": "DELETE FROM progress WHERE progress.run_id = ? AND progress.task = ?",
    "progress_new": "INSERT INTO progress (run_id, task, attempt, done, total, unit, metrics, message, history, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to a run store file, set up as every connection to one is."""
    conn = sqlite3.connect(str(path), check_same_thread=False)
    set_pragmas(conn)
    return conn


def set_pragmas(conn) -> None:
    """What every connection to a store file needs (a DB-API connection: sqlite3's, or the one
    SQLAlchemy's engine opens)."""
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process
    cursor.execute("PRAGMA busy_timeout=30000")  # two engines on one file wait, never fail
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create(path: str | Path) -> None:
    """Create the tables of this version in a new, empty file."""
    conn = connect(path)
    try:
        with conn:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute("""INSERT INTO fanflow_meta ("key", value) VALUES ('schema_version', ?)""",
                         (str(SCHEMA_VERSION),))
    finally:
        conn.close()


def version(conn: sqlite3.Connection) -> int | None:
    """The schema version a store file says it has; None when it says nothing (a file being
    created by another process, an empty database)."""
    try:
        row = conn.execute("""SELECT value FROM fanflow_meta WHERE "key" = 'schema_version'""").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None
