"""The run store on SQLite and on a real PostgreSQL server."""

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.stores import schema
from fanflow.stores.runs import RunStore
from fanflow.stores.schema import SCHEMA_VERSION
from tests.conftest import write

STEPS = Path(__file__).parents[1] / "engine" / "flowsteps.py"
POSTGRES = os.environ.get("FANFLOW_TEST_POSTGRES")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    if not POSTGRES:
        pytest.skip("no PostgreSQL server: set FANFLOW_TEST_POSTGRES to its URL (scripts/test.sh starts one)")
    name = f"fanflow_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture
def flow(workdir):
    shutil.copy(STEPS, workdir / "flowsteps.py")
    return load_workflow(write(workdir, "f.yaml", """
        name: stored
        params: {xs: [1, 2, 3]}
        steps:
          square:
            uses: flowsteps:square
            fan_out: {x: "${params.xs}"}
            with: {x: "${item.x}"}
          arrays: {uses: flowsteps:big_array, with: {mb: 1}}
          total:
            uses: flowsteps:total
            with: {values: "${square[*]}"}
            needs: [arrays]
        """))


def test_a_run_is_recorded_completely(db_url, home, flow):
    project = Project(home, db=db_url)
    result = project.run(flow)
    assert result.state == "succeeded"
    store = project.store
    row = store.get_run(result.run_id)
    assert row.state == "succeeded" and row.workflow == "stored" and row.params == {"xs": [1, 2, 3]}
    assert row.ended >= row.started and row.spec["steps"]["square"]["uses"] == "flowsteps:square"
    tasks = store.tasks(result.run_id)
    assert [t["name"] for t in tasks] == ["square[x=1]", "square[x=2]", "square[x=3]", "arrays", "total"]
    assert tasks[0]["item"] == {"x": 1}
    assert all(t["state"] == "succeeded" and t["attempts"] == 1 and t["cache_key"] for t in tasks)
    lineage = store.lineage(result.run_id)
    produced = [r for r in lineage if r["task"] == "arrays" and r["role"] == "output"]
    assert len(produced) == 1 and produced[0]["digest"].startswith("sha256:")
    assert store.get_run(result.run_id[:15]).id == result.run_id  # a unique prefix is enough
    project.close()


def test_the_cache_survives_across_runs_and_processes(db_url, home, flow):
    Project(home, db=db_url).run(flow)
    again = Project(home, db=db_url).run(flow)
    assert all(t.cached for t in again.tasks.values())


def test_schema_is_versioned_and_a_newer_schema_is_refused(db_url):
    store = RunStore(db_url)
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.begin() as conn:
        conn.execute(schema.meta_table.update().values(value=str(SCHEMA_VERSION + 1)))
    store.close()
    with pytest.raises(RuntimeError, match="upgrade fanflow"):
        RunStore(db_url)


def test_migrations_bring_an_empty_database_to_the_current_version(db_url):
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        assert not sa.inspect(conn).has_table("runs")
        # An empty SQLite database that is a database: a header, no tables (a 0-byte file is refused).
        conn.exec_driver_sql("CREATE TABLE scratch (a INTEGER)")
        conn.exec_driver_sql("DROP TABLE scratch")
    engine.dispose()
    store = RunStore(db_url)
    with store.engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert {"runs", "tasks", "attempts", "artifacts", "lineage", "cache", "leases", "fanflow_meta"} <= names
    store.close()


def test_a_run_whose_engine_died_reads_as_interrupted(db_url):
    store = RunStore(db_url)
    with store.engine.begin() as conn:
        conn.execute(schema.runs.insert().values(
            id="dead", workflow="w", spec="{}", params="{}", state="running", started=time.time() - 100,
            heartbeat=time.time() - 100, host="some-other-host", pid=1))
        conn.execute(schema.runs.insert().values(
            id="alive", workflow="w", spec="{}", params="{}", state="running", started=time.time(),
            heartbeat=time.time(), host="some-other-host", pid=1))
    states = {r.id: r.state for r in store.list_runs()}
    assert states == {"dead": "interrupted", "alive": "running"}
    store.close()


def test_gc_older_than_reads_days_as_its_help_says(tmp_path):
    from tests.conftest import cli

    home = tmp_path / "h"
    store = RunStore(f"sqlite:///{home / 'runs.db'}")
    with store.engine.begin() as conn:
        for run_id, age_days in (("old", 8), ("recent", 2)):
            started = time.time() - age_days * 86400
            conn.execute(schema.runs.insert().values(
                id=run_id, workflow="w", spec="{}", params="{}", state="succeeded", started=started,
                ended=started + 1, heartbeat=started, host="h", pid=1))
    store.close()
    result = cli("gc", "--keep", "0", "--older-than", "7d", "--home", home, check=True)
    assert "dropped 1 runs" in result.stdout and "run old" in result.stdout
    assert [r.id for r in RunStore(f"sqlite:///{home / 'runs.db'}").list_runs()] == ["recent"]


def test_a_run_is_found_by_prefix_or_latest_and_an_ambiguous_prefix_lists_the_runs(tmp_path):
    from fanflow.stores.errors import AmbiguousRun, RunNotFound

    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    with store.engine.begin() as conn:
        for number, run_id in enumerate(("20260101-aaaa", "20260102-bbbb", "20260102-bbcc")):
            conn.execute(schema.runs.insert().values(
                id=run_id, workflow="w", spec="{}", params="{}", state="succeeded", started=1000.0 + number,
                ended=1001.0 + number, heartbeat=1000.0, host="h", pid=1))
    assert store.find_run("20260101").id == "20260101-aaaa"
    assert store.find_run("latest").id == "20260102-bbcc"
    with pytest.raises(AmbiguousRun) as info:
        store.find_run("2026")
    assert info.value.candidates == ["20260102-bbcc", "20260102-bbbb", "20260101-aaaa"]
    assert "'2026' matches several runs: 20260102-bbcc (w, succeeded); 20260102-bbbb" in str(info.value)
    with pytest.raises(RunNotFound, match="no run '2025'"):
        store.find_run("2025")
    with pytest.raises(RunNotFound):
        store.find_run("2026010_")  # a LIKE wildcard is only a character here
    store.close()


class _Continuing:
    """What RunStore.begin reads of a run: here one that continues run ``resumed_from``."""

    def __init__(self, run_id: str, resumed_from: str | None):
        from fanflow.spec.loader import workflow_from_dict

        self.run_id, self.resumed_from, self.started, self.home = run_id, resumed_from, time.time(), "h"
        self.workflow = workflow_from_dict({"name": "w", "steps": {"a": {"uses": "json:dumps", "with": {"obj": 1}}}})
        self.params, self.executor = {}, "local"


def test_a_run_is_continued_by_one_engine_at_a_time(db_url):
    from fanflow.stores.errors import RunLeased

    store = RunStore(db_url)
    store.begin(_Continuing("first", None))
    store.finish("first", "failed", "boom", time.time())
    store.begin(_Continuing("again-1", "first"))
    with pytest.raises(RunLeased, match=r"run first is already being continued by run again-1 \(pid \d+ on "):
        store.begin(_Continuing("again-2", "first"))
    assert store.get_run("again-2") is None  # refused before it was recorded
    store.finish("again-1", "succeeded", None, time.time())
    store.begin(_Continuing("again-3", "first"))  # the lease was released
    store.finish("again-3", "succeeded", None, time.time())
    store.close()
