"""A full disk under the artifact store, and writes killed half way: a failed write leaves
no temporary file behind, and ``fanflow gc`` removes those that crashes left."""

import shutil
import signal
import subprocess
import sys
import time

from fanflow.spec.loader import load_workflow
from fanflow.stores.artifacts import ArtifactStore
from tests.conftest import cli
from tests.engine.drive import run_workflow as run


def test_a_write_that_fills_the_disk_cleans_up_after_itself(flows, home, small_disk, monkeypatch):
    disk = small_disk("5m")
    monkeypatch.setenv("FANFLOW_ARTIFACTS", str(disk / "artifacts"))
    spec = load_workflow(flows("name: big\nsteps:\n  make: {uses: fault_steps:big, with: {mb: 8}}\n"))
    result = run(home, spec)
    assert result.state == "failed"
    error = result.tasks["make"].error
    assert f"the disk holding the artifact store {disk / 'artifacts'} is full" in error, error
    assert list((disk / "artifacts" / "tmp").iterdir()) == []
    assert shutil.disk_usage(disk).used < 256 * 1024  # the partial 5 MB is gone, not just hidden
    small = load_workflow(flows("name: small\nsteps:\n  make: {uses: fault_steps:big, with: {mb: 1}}\n",
                                name="small.yaml"))
    assert run(home, small).state == "succeeded"  # the disk is usable again at once


def test_gc_removes_the_temporary_files_of_killed_writers(home, tmp_path):
    writer = tmp_path / "writer.py"
    writer.write_text(
        "import os, sys, time\n"
        "from fanflow.stores.artifacts import ArtifactStore\n"
        "store = ArtifactStore(sys.argv[1])\n"
        "with open(store.temp_path('.npy'), 'wb') as f:\n"
        "    f.write(os.urandom(2 * 2**20)); f.flush()\n"
        "    print('written', flush=True); time.sleep(1000)\n")
    process = subprocess.Popen([sys.executable, str(writer), str(home / "artifacts")], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "written"
    process.send_signal(signal.SIGKILL)  # killed half way through a write
    process.wait()
    store = ArtifactStore(home / "artifacts")
    [left] = store.temp_files()
    assert left.stat().st_size == 2 * 2**20
    result = cli("gc", "--keep", "0", "--home", home, check=True)
    assert "dropped 1 temporary files of unfinished writes (2.1 MB)" in result.stdout, result.stdout
    assert store.temp_files() == [] and not left.exists()


def test_gc_spares_fresh_temporary_files_while_a_run_is_live(home):
    from fanflow.project import Project
    from fanflow.stores import gc

    project = Project(home)
    store = ArtifactStore(project.artifacts_url)
    fresh = store.temp_path(".bin")
    fresh.write_bytes(b"being written")
    project.store.begin(_LiveRun("live", time.time(), str(home)))
    report = gc.collect(project, keep=0)
    assert report.temp_files == [] and fresh.exists()  # perhaps the live run's own write
    project.store.finish("live", "succeeded", None, time.time())
    assert gc.collect(project, keep=0).temp_files == [str(fresh)]
    project.close()


class _LiveRun:
    """What RunStore.begin reads of a run, for a run that is only recorded."""

    def __init__(self, run_id: str, started: float, home: str):
        from fanflow.spec.loader import workflow_from_dict

        self.run_id, self.started, self.home = run_id, started, home
        self.workflow = workflow_from_dict({"name": "live", "steps": {"a": {"uses": "json:dumps", "with": {"obj": 1}}}})
        self.params, self.executor, self.resumed_from = {}, "local", None
