"""The reference workflow end to end, on small data: ingest, a zoo trained in parallel, the
top two served by real model servers behind the ensemble gateway, the held-out clips tagged
through it over HTTP, and the coverage report."""

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.stores.artifacts import ArtifactStore
from fanflow.vocab.states import State
from tests.conftest import ROOT, cli

WORKFLOW = ROOT / "examples" / "video_entity_tagging" / "workflow.yaml"
SMALL = {"train_clips": 600, "val_clips": 200, "test_clips": 200, "epochs": 3,
         "models": ["cnn_batchnorm", "cnn_motion", "logistic"], "min_accuracy": 0.0}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    home = tmp_path_factory.mktemp("reference") / ".fanflow"
    project = Project(home)
    result = project.run(load_workflow(WORKFLOW), params=SMALL)
    yield project, result
    project.close()


def test_the_reference_workflow_runs_end_to_end(finished):
    _, result = finished
    assert result.state == "succeeded", result.error
    trained = [t for t in result.tasks.values() if t.step == "train"]
    assert [t.name for t in trained] == ["train[model=cnn_batchnorm]", "train[model=cnn_motion]",
                                        "train[model=logistic]"]
    selected = result.outputs("select")[0]
    assert len(selected) == 2
    served = [t for t in result.tasks.values() if t.step == "serve"]
    assert [t.name for t in served] == [f"serve[model={c['name']}]" for c in selected]
    assert all(t.state is State.SUCCEEDED for t in served)  # stopped cleanly when the run ended


def _file(project, ref) -> Path:
    """The local file an output's artifact reference points to."""
    return ArtifactStore(project.artifacts_url).path(ref["$artifact"], ref.get("suffix", ""))


def test_the_union_misses_no_more_than_either_member_and_the_report_says_so(finished):
    project, result = finished
    report = result.outputs("aggregate")[0]
    summary = report["summary"]
    assert summary["served_union_mismatched_clips"] == 0
    assert summary["union_missed_per_clip"] <= summary["best_member_missed_per_clip"]
    assert summary["clips"] == 200 and len(summary["members"]) == 2
    markdown = _file(project, report["markdown"]).read_text()
    for member in summary["members"]:
        assert member in markdown
    assert "union" in markdown
    assert _file(project, report["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in _file(project, report["html"]).read_text()


def test_servers_are_gone_after_the_run(finished):
    _, result = finished
    ports = [int(e["url"].rsplit(":", 1)[1]) for e in result.outputs("serve")]
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert not set(ports) & listening


def test_serve_brings_the_run_back_up_without_retraining_and_predict_tags_clips(finished, tmp_path):
    project, result = finished
    process = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "serve", result.run_id,
                                "--home", str(project.home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    urls = {}
    deadline = time.time() + 180
    while len(urls) < 3 and time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line.startswith("serving "):
            name, url = line.removeprefix("serving ").rsplit(": ", 1)
            urls[name] = url.strip()
    try:
        assert "gateway" in urls, process.stderr.read() if process.poll() is not None else urls
        served_run = project.store.list_runs(1)[0]
        trained = [t for t in project.store.tasks(served_run.id) if t["step"] == "train"]
        assert trained and all(t["cached"] for t in trained)  # no retraining
        preview = _file(project, result.outputs("ingest")[0]["previews"][0])
        answer = cli("predict", "--url", urls["gateway"], preview, "--json", check=True)
        clips = json.loads(answer.stdout)["clips"]
        assert len(clips) == 1 and all("found_by" in p for p in clips[0]["provenance"])
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0


@pytest.mark.ray
def test_on_ray_the_same_models_are_selected_and_the_same_report_comes_out(finished, tmp_path):
    _, local = finished
    project = Project(tmp_path / ".fanflow")
    try:
        on_ray = project.run(load_workflow(WORKFLOW), params=SMALL, executor="ray")
    finally:
        project.close()
    assert on_ray.state == "succeeded", on_ray.error
    names = [c["name"] for c in on_ray.outputs("select")[0]]
    assert names == [c["name"] for c in local.outputs("select")[0]]
    ray_summary = on_ray.outputs("aggregate")[0]["summary"]
    local_summary = local.outputs("aggregate")[0]["summary"]
    for key in ("union_missed_per_clip", "best_member_missed_per_clip", "union_recall", "baseline_recall",
                "union_false_per_clip"):
        assert ray_summary[key] == local_summary[key], key


def test_a_folder_of_the_users_own_videos_runs_through_the_same_workflow(tmp_path):
    from tests.ml.test_video_folder import make_folder

    make_folder(tmp_path / "videos", n=30, seed=1)
    project = Project(tmp_path / ".fanflow")
    try:
        result = project.run(load_workflow(WORKFLOW), params={
            **SMALL, "videos": str(tmp_path / "videos"), "models": ["cnn_batchnorm", "logistic"], "epochs": 2})
    finally:
        project.close()
    assert result.state == "succeeded", result.error
    data = result.outputs("ingest")[0]
    assert data["report"]["source"] == "video_folder" and data["report"]["skipped"] == 0
    summary = result.outputs("aggregate")[0]["summary"]
    assert summary["clips"] == data["test"]["x"]["shape"][0] and summary["served_union_mismatched_clips"] == 0
