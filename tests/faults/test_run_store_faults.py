"""Faults injected into a real run store: a damaged database, a full disk under it, a file
that is not a run store, and two engines continuing one run. Each is one line saying what to
do (exit code 1 or 2, no traceback); nothing is silently reused; a run has one owner."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.stores import schema
from fanflow.stores.errors import RunLeased
from fanflow.stores.runs import RunStore
from tests.conftest import ROOT, cli
from tests.faults.conftest import one_clean_line

FLOW = """
name: small
steps:
  make: {uses: fault_steps:arange, with: {n: 1000}}
  total: {uses: fault_steps:total, with: {values: "${make}"}}
"""


def _zero_a_page(db: Path) -> None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    with open(db, "r+b") as f:  # the runs table's first page; the header and schema are intact
        f.seek((page - 1) * 4096)
        f.write(bytes(4096))


def _flip_header_byte(db: Path) -> None:
    with open(db, "r+b") as f:
        f.seek(18)  # the file format's write version: 1 or 2 in every sound file
        f.write(b"\x07")


def _other_programs_database(db: Path) -> None:
    db.unlink()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")


DAMAGE = {
    "truncated": lambda db: os.truncate(db, db.stat().st_size // 2),
    "header_byte_flipped": _flip_header_byte,
    "page_zeroed": _zero_a_page,
    "zero_bytes": lambda db: os.truncate(db, 0),
    "a_text_file": lambda db: db.write_text("these are my notes, not a database\n"),
    "another_programs_database": _other_programs_database,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_or_foreign_run_store_is_one_clear_error_and_doctor_repairs_it(damage, flows, home):
    flow = flows(FLOW)
    project = Project(home)
    for cache in (True, False):
        project.run(load_workflow(flow), cache=cache)
    project.close()
    db = home / "runs.db"
    assert not Path(f"{db}-wal").exists()  # checkpointed when the store closed
    DAMAGE[damage](db)
    before = db.read_bytes()
    commands = [["runs"]]
    if damage in ("page_zeroed", "zero_bytes"):  # the store opens, then fails under the run; or is refused
        commands.append(["run", flow])
    if damage == "truncated":
        commands += [["show", "latest"], ["doctor"]]
    for command in commands:
        result = cli(*command, "--home", home)
        if command == ["doctor"]:
            assert result.returncode == 1 and "the file is cut short" in result.stdout, result.stdout
            continue
        assert result.returncode in (1, 2), result.stderr
        line = one_clean_line(result) if command[0] != "run" else _last_error(result)
        assert str(db) in line
        assert "doctor" in line or "not a fanflow run store" in line, line
    assert db.read_bytes() == before  # refused, not reused or overwritten
    repaired = cli("doctor", "--repair", "--home", home)
    assert repaired.returncode == 1 and "repaired: moved the damaged file to" in repaired.stdout, repaired.stdout
    [kept] = [p for p in home.glob("runs.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert kept.read_bytes() == before  # nothing of the user's is destroyed
    project = Project(home)  # a sound store again, that runs work in
    assert project.run(load_workflow(flow)).state == "succeeded"
    project.close()


def _last_error(result) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_full_disk_under_the_run_store_fails_the_run_with_one_line(flows, small_disk, tmp_path):
    items = list(range(3000))
    flow = flows(f"name: fill\nsteps:\n  s: {{uses: fault_steps:wordy, fan_out: {{i: {items}}}, "
                 "with: {i: '${item.i}'}}\n")
    home = small_disk("3m") / "home"
    env = {"FANFLOW_ARTIFACTS": str(tmp_path / "artifacts")}
    result = cli("run", flow, "--home", home, env=env)
    assert result.returncode == 1
    line = _last_error(result)
    assert f"the disk holding the run store {home / 'runs.db'} is full" in line
    assert "fanflow resume" in line
    listed = cli("runs", "--home", home, env=env)  # reading needs no space
    assert listed.returncode == 0 and "fill" in listed.stdout
    assert " running " not in listed.stdout  # failed or interrupted: never left running


def test_a_second_resume_of_the_same_run_is_refused_naming_the_owner(flows, home, tmp_path):
    marks, flag = tmp_path / "marks", tmp_path / "fail"
    flag.touch()
    flow = flows(f"""
        name: items
        on_failure: continue
        steps:
          work:
            uses: fault_steps:item
            fan_out: {{i: {list(range(120))}}}
            with: {{i: "${{item.i}}", marks: "{marks}", delay: 0.05, fail_while: "{flag}", fail_from: 20}}
    """)
    first = cli("run", flow, "--home", home, "--json")
    assert first.returncode == 1
    run_id = json.loads(first.stdout)["run"]
    flag.unlink()
    command = [sys.executable, "-m", "fanflow.cli.main", "resume", run_id, "--home", str(home)]
    both = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in both]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(err for code, err in outcomes if code == 2)
    errors = [line for line in refused.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in refused, refused
    assert f"run {run_id} is already being continued by run " in errors[0]
    assert f"on {socket.gethostname()})" in errors[0] and "(pid " in errors[0]
    runs = {}
    for mark in marks.iterdir():
        runs[int(mark.name.split(".")[0])] = runs.get(int(mark.name.split(".")[0]), 0) + 1
    assert all(runs[i] == 1 for i in range(20)), runs  # done before, reused
    assert all(runs[i] == 2 for i in range(20, 120)), runs  # failed once, then done once


def test_a_lease_held_by_a_dead_engine_is_taken_over(flows, home):
    spec = load_workflow(flows(FLOW))
    project = Project(home)
    first = project.run(spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = project.store
    with store.engine.begin() as conn:
        conn.execute(schema.runs.insert().values(
            id="crashed", workflow="small", spec="{}", params="{}", state="running", started=time.time(),
            heartbeat=time.time(), host=socket.gethostname(), pid=dead.pid))
        conn.execute(schema.leases.insert().values(
            run_id=first.run_id, owner="crashed", host=socket.gethostname(), pid=dead.pid, taken=time.time()))
    spec_again, params, previous = project.resumable(first.run_id)
    resumed = project.run(spec_again, params=params, resume=previous)
    assert resumed.state == "succeeded"
    with store.engine.connect() as conn:
        assert conn.execute(schema.leases.select()).all() == []  # released when the run ended
    project.close()


def test_a_live_lease_refuses_through_the_python_api_too(flows, home):
    spec = load_workflow(flows(FLOW))
    project = Project(home)
    first = project.run(spec)
    store = RunStore(project.db_url)
    with store.engine.begin() as conn:
        conn.execute(schema.runs.insert().values(
            id="alive", workflow="small", spec="{}", params="{}", state="running", started=time.time(),
            heartbeat=time.time(), host=socket.gethostname(), pid=os.getpid()))
        conn.execute(schema.leases.insert().values(
            run_id=first.run_id, owner="alive", host=socket.gethostname(), pid=os.getpid(), taken=time.time()))
    with pytest.raises(RunLeased, match=f"already being continued by run alive \\(pid {os.getpid()}"):
        project.resumable(first.run_id)
    runner = project.runner(spec, resume=first.run_id)  # straight to the engine: refused as it begins
    with pytest.raises(RunLeased):
        runner.run()
    store.close()
    project.close()


def test_a_version_1_store_is_migrated_to_hold_leases(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    RunStore(url).close()
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        conn.execute("DROP TABLE leases")
        conn.execute("UPDATE fanflow_meta SET value = '1' WHERE key = 'schema_version'")
    store = RunStore(url)
    assert store.schema_version() == schema.SCHEMA_VERSION
    with store.engine.connect() as conn:
        assert conn.execute(schema.leases.select()).all() == []
    store.close()
