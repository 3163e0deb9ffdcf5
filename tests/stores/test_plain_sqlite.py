"""The default SQLite store spoken to without SQLAlchemy: its text is what SQLAlchemy makes
of the schema's tables, and a run on it never imports SQLAlchemy."""

import contextlib
import re
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from fanflow.stores import plain_sqlite, schema
from fanflow.stores.recording import Statement


def _normal(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


@pytest.mark.parametrize("name", sorted(plain_sqlite.STATEMENTS))
def test_each_statement_is_the_one_sqlalchemy_compiles(name):
    compiled = Statement(name, sqlite.dialect())
    assert _normal(plain_sqlite.STATEMENTS[name]) == _normal(compiled.sql)


def _shape(path) -> dict:
    """Every table's columns, keys, foreign keys and indexes, as SQLite reports them."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        shape = {}
        for table in tables:
            indexes = [r[1:] for r in conn.execute(f'PRAGMA index_list("{table}")')]
            shape[table] = {
                "columns": [r[1:] for r in conn.execute(f'PRAGMA table_info("{table}")')],
                "foreign_keys": [r[2:] for r in conn.execute(f'PRAGMA foreign_key_list("{table}")')],
                "indexes": sorted((name, unique, origin, tuple(c[2] for c in conn.execute(
                    f'PRAGMA index_info("{name}")'))) for name, unique, origin, _ in indexes),
            }
        shape["meta"] = list(conn.execute("SELECT * FROM fanflow_meta"))
    return shape


def test_a_store_created_without_sqlalchemy_has_the_schema_sqlalchemy_creates(tmp_path):
    plain_sqlite.create(tmp_path / "plain.db")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    schema.migrate(engine, "test")
    engine.dispose()
    plain, migrated = _shape(tmp_path / "plain.db"), _shape(tmp_path / "migrated.db")
    assert plain == migrated
    assert plain["meta"] == [("schema_version", str(plain_sqlite.SCHEMA_VERSION))]
    assert len(schema.MIGRATIONS) == plain_sqlite.SCHEMA_VERSION


def test_a_run_on_the_default_store_never_imports_sqlalchemy(workdir):
    (workdir / "steps.py").write_text("def numbers(n):\n    return list(range(n))\n\n"
                                      "def square(x):\n    return x * x\n\n"
                                      "def total(values):\n    return sum(values)\n")
    (workdir / "flow.yaml").write_text(textwrap.dedent("""
        name: plain
        steps:
          numbers: {uses: steps:numbers, with: {n: 5}}
          square: {uses: steps:square, fan_out: {x: "${numbers}"}, with: {x: "${item.x}"}}
          total: {uses: steps:total, with: {values: "${square[*]}"}}
        """))
    script = textwrap.dedent("""
        import sys
        from fanflow.cli.main import app
        for _ in range(2):  # a new store, then the same one again (all of it reused)
            try:
                app(["run", "flow.yaml", "--home", "home"])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
        print("sqlalchemy imported:", "sqlalchemy" in sys.modules)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "total = 30" in done.stdout
    assert "sqlalchemy imported: False" in done.stdout
