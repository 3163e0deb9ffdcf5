"""Durable runs: caching across runs, resume after a failure or a killed engine."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.vocab.states import State
from tests.conftest import cli, write
from tests.engine.drive import run_workflow as run
from tests.engine.flowsteps import count

STEPS = Path(__file__).with_name("flowsteps.py")

FANOUT = """
name: squares
params: {xs: [1, 2, 3], delay: 0.0, marks: "", fail_on: []}
steps:
  square:
    uses: flowsteps:square
    fan_out: {x: "${params.xs}"}
    with: {x: "${item.x}", delay: "${params.delay}", marks: "${params.marks}"}
  total:
    uses: flowsteps:total
    with: {values: "${square[*]}", marks: "${params.marks}"}
"""


@pytest.fixture
def flows(workdir):
    shutil.copy(STEPS, workdir / "flowsteps.py")
    return workdir




def test_a_second_identical_run_is_all_cache_hits(flows, home, tmp_path, executor):
    spec = load_workflow(write(flows, "f.yaml", FANOUT))
    marks = str(tmp_path / "marks")
    first = run(home, spec, executor, params={"marks": marks})
    second = run(home, spec, executor, params={"marks": marks})
    assert first.state == second.state == "succeeded"
    assert all(t.cached for t in second.tasks.values())
    assert second.outputs("total") == first.outputs("total")
    assert count(marks, "square-1") == 1 and count(marks, "total") == 1
    rows = Project(home).store.tasks(second.run_id)
    assert all(r["cached"] and r["state"] == "succeeded" for r in rows)


def test_adding_a_fan_out_item_runs_only_the_new_branch_and_the_fan_in(flows, home, tmp_path, executor):
    spec = load_workflow(write(flows, "f.yaml", FANOUT))
    marks = str(tmp_path / "marks")
    run(home, spec, executor, params={"marks": marks, "xs": [1, 2, 3]})
    result = run(home, spec, executor, params={"marks": marks, "xs": [1, 2, 3, 4]})
    ran = sorted(name for name, t in result.tasks.items() if not t.cached)
    assert ran == ["square[x=4]", "total"]
    assert [count(marks, f"square-{x}") for x in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert result.outputs("total") == [{"sum": 30, "xs": [1, 2, 3, 4]}]


def test_changing_one_branchs_code_reruns_only_that_branch(flows, home, executor):
    write(flows, "model_a.py", "def fit(x):\n    return {'y': x + 1, 'x': x}\n")
    write(flows, "model_b.py", "def fit(x):\n    return {'y': x + 2, 'x': x}\n")
    write(flows, "zoo.py", """
        import importlib

        def train(model, x):
            module, _, name = model.partition(":")
            return getattr(importlib.import_module(module), name)(x)
        """)
    spec = load_workflow(write(flows, "zoo.yaml", """
        name: zoo
        steps:
          train:
            uses: zoo:train
            fan_out: {model: ["model_a:fit", "model_b:fit"]}
            with: {model: "${item.model}", x: 10}
          total:
            uses: flowsteps:total
            with: {values: "${train[*]}"}
        """))
    run(home, spec, executor)
    write(flows, "model_b.py", "def fit(x):\n    return {'y': x * 100, 'x': x}\n")
    result = run(home, spec, executor)
    assert not result.tasks["train[model=model_b:fit]"].cached
    assert result.tasks["train[model=model_a:fit]"].cached
    assert not result.tasks["total"].cached
    assert result.outputs("total") == [{"sum": 11 + 1000, "xs": [10, 10]}]


def test_cache_false_and_no_cache_always_run(flows, home, tmp_path, executor):
    marks = str(tmp_path / "marks")
    text = FANOUT.replace("    uses: flowsteps:total\n", "    uses: flowsteps:total\n    cache: false\n")
    spec = load_workflow(write(flows, "f.yaml", text))
    run(home, spec, executor, params={"marks": marks})
    again = run(home, spec, executor, params={"marks": marks})
    assert again.tasks["square[x=1]"].cached and not again.tasks["total"].cached
    assert count(marks, "total") == 2
    fresh = run(home, spec, executor, params={"marks": marks}, cache=False)
    assert not any(t.cached for t in fresh.tasks.values())
    assert count(marks, "square-1") == 2


def test_resume_after_a_failure_reuses_finished_tasks(flows, home, tmp_path, executor):
    flag = tmp_path / "flag"
    marks = str(tmp_path / "marks")
    spec = load_workflow(write(flows, "r.yaml", f"""
        name: resumable
        on_failure: continue
        steps:
          square:
            uses: flowsteps:square
            fan_out: {{x: [1, 2, 3]}}
            with: {{x: "${{item.x}}", marks: "{marks}"}}
          gate:
            uses: flowsteps:fail_unless
            with: {{flag: "{flag}"}}
            cache: false
          total:
            uses: flowsteps:total
            with: {{values: "${{square[*]}}", marks: "{marks}"}}
            needs: [gate]
        """))
    first = run(home, spec, executor, cache=False)
    assert first.state == "failed" and first.tasks["total"].state is State.SKIPPED
    flag.touch()
    project = Project(home)
    spec2, params, previous = project.resumable(first.run_id)
    resumed = project.run(spec2, params=params, executor=executor, cache=False, resume=previous)
    assert resumed.state == "succeeded"
    assert [count(marks, f"square-{x}") for x in (1, 2, 3)] == [1, 1, 1]
    assert {n for n, t in resumed.tasks.items() if t.cached} == {"square[x=1]", "square[x=2]", "square[x=3]"}
    assert resumed.outputs("total") == [{"sum": 14, "xs": [1, 2, 3]}]
    assert project.store.get_run(resumed.run_id).resumed_from == first.run_id


def _wait_for(predicate, timeout=60.0, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_a_killed_engine_is_detected_and_resume_finishes_without_redoing_work(flows, home, tmp_path):
    marks = tmp_path / "marks"
    write(flows, "slow.yaml", FANOUT)
    args = [sys.executable, "-m", "fanflow.cli.main", "run", "slow.yaml", "--home", str(home),
            "-p", "xs=[1, 2, 3, 4, 5, 6]", "-p", "delay=1.0", "-p", f"marks={marks}"]
    engine = subprocess.Popen(args, cwd=flows, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    project = Project(home)

    def finished_squares():
        rows = project.store.list_runs(1)
        return [t for t in project.store.tasks(rows[0].id) if t["state"] == "succeeded"] if rows else []

    assert _wait_for(lambda: len(finished_squares()) >= 2)
    workers = [p.pid for p in psutil.Process(engine.pid).children(recursive=True)]
    engine.send_signal(signal.SIGKILL)
    engine.wait()
    done_before = {t["name"] for t in finished_squares()}
    assert done_before and "total" not in done_before
    # The run is seen as interrupted, not left "running" forever, and its workers died with it.
    row = project.store.list_runs(1)[0]
    assert row.state == "interrupted"
    assert _wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                     for p in workers), timeout=10)
    listing = cli("runs", "--home", home, check=True)
    assert "interrupted" in listing.stdout
    resumed = cli("resume", row.id, "--home", home, cwd=flows)
    assert resumed.returncode == 0, resumed.stderr
    for name in done_before:  # no finished task ran again
        x = json.loads(name.split("=")[1].rstrip("]"))
        assert count(marks, f"square-{x}") == 1, name
    new = project.store.list_runs(1)[0]
    assert new.resumed_from == row.id and new.state == "succeeded"
    total = next(t for t in project.store.tasks(new.id) if t["name"] == "total")
    assert total["output"] == {"sum": sum(x * x for x in range(1, 7)), "xs": [1, 2, 3, 4, 5, 6]}
    reused = {t["name"] for t in project.store.tasks(new.id) if t["cached"]}
    assert done_before <= reused


def test_two_engines_on_one_sqlite_file_do_not_corrupt_it(flows, home):
    write(flows, "a.yaml", FANOUT.replace("name: squares", "name: first"))
    write(flows, "b.yaml", FANOUT.replace("name: squares", "name: second"))
    procs = [subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "run", name, "--home", str(home),
                               "-p", "xs=[1, 2, 3, 4, 5, 6, 7, 8]", "-p", "delay=0.05", "--no-cache"],
                              cwd=flows, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("a.yaml", "b.yaml")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    store = Project(home).store
    runs = store.list_runs(10)
    assert sorted(r.workflow for r in runs) == ["first", "second"]
    for row in runs:
        tasks = store.tasks(row.id)
        assert len(tasks) == 9 and all(t["state"] == "succeeded" for t in tasks)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_killing_a_writer_never_leaves_an_artifact_that_reads_as_complete(tmp_path):
    from fanflow.stores.artifacts import ArtifactStore, sha256_file

    root = tmp_path / "artifacts"
    writer = tmp_path / "writer.py"
    writer.write_text(
        "import os, sys\n"
        "from fanflow.stores.artifacts import ArtifactStore\n"
        "store = ArtifactStore(sys.argv[1])\n"
        "for i in range(1000):\n"
        "    store.put_bytes(os.urandom(64 * 2**20), suffix='.bin')\n")
    for delay in (0.0, 0.3, 0.6):
        before = len(list((root / "tmp").glob("*.part"))) if root.exists() else 0
        proc = subprocess.Popen([sys.executable, str(writer), str(root)])
        deadline = time.time() + 60  # a loaded machine may take seconds to start writing
        while time.time() < deadline and len(list((root / "tmp").glob("*.part"))) <= before:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = ArtifactStore(root)
    objects = list(store.iter_objects())
    for digest, _suffix, path in objects:
        assert sha256_file(path) == digest, f"{path} does not match its name"
    leftovers = list((root / "tmp").iterdir())
    assert all(p.name.endswith(".part") for p in leftovers)
    assert objects or leftovers, "the writer never got going"


def test_gc_drops_old_runs_and_unreferenced_artifacts(flows, home):
    spec = load_workflow(write(flows, "a.yaml", """
        name: arrays
        params: {mb: 1}
        steps:
          make: {uses: flowsteps:big_array, with: {mb: "${params.mb}"}}
        """))
    first = run(home, spec, params={"mb": 1})
    second = run(home, spec, params={"mb": 2})
    objects = home / "artifacts" / "objects"
    assert len(list(objects.glob("*/*.npy"))) == 2
    dry = cli("gc", "--keep", "1", "--dry-run", "--home", home, check=True)
    assert "would drop 1 runs and 1 artifacts" in dry.stdout and len(list(objects.glob("*/*.npy"))) == 2
    cli("gc", "--keep", "1", "--home", home, check=True)
    assert len(list(objects.glob("*/*.npy"))) == 1
    store = Project(home).store
    assert store.get_run(first.run_id) is None and store.get_run(second.run_id) is not None
    assert not (home / "logs" / first.run_id).exists()
    again = run(home, spec, params={"mb": 2})
    assert all(t.cached for t in again.tasks.values())
