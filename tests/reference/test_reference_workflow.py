"""The reference workflow end to end, on small data (its quick preset, run through the command
line as a user runs it): ingest, a zoo trained in parallel, the ensemble chosen on validation
served by real model servers behind the ensemble gateway, the held-out clips tagged through it
over HTTP, the leaderboard and the report; and, when no model reaches the bar, the leaderboard
shown and the run failed in one line."""

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
from fanflow.results import Run
from fanflow.spec.loader import load_workflow
from fanflow.spec.presets import apply_preset
from tests.conftest import ROOT, cli

WORKFLOW = ROOT / "examples" / "video_entity_tagging" / "workflow.yaml"
QUICK = load_workflow(WORKFLOW).presets["quick"].params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """``fanflow run video-entity-tagging --preset quick``: what it printed and the run it left."""
    home = tmp_path_factory.mktemp("reference") / ".fanflow"
    shown = cli("run", "video-entity-tagging", "--preset", "quick", "--home", home, timeout=600)
    project = Project(home)
    run = Run.read(project, "latest")
    yield project, run, shown
    project.close()


def test_the_reference_workflow_runs_end_to_end(finished):
    _, run, shown = finished
    assert shown.returncode == 0 and run.state == "succeeded", shown.stderr
    trained = [t for t in run.tasks.values() if t.step == "train"]
    assert [t.name for t in trained] == [f"train[model={name}]" for name in QUICK["models"]]
    selection = run["select"]
    selected = selection["models"]
    assert len(selected) == 2 and selection["passed"]
    served = [t for t in run.tasks.values() if t.step == "serve"]
    assert sorted(t.name for t in served) == sorted(f"serve[model={c['name']}]" for c in selected)
    assert all(t.state == "succeeded" for t in served)  # stopped cleanly when the run ended


def test_the_summary_shows_the_preset_the_leaderboard_and_then_the_report(finished):
    _, run, shown = finished
    assert "preset quick:" in shown.stderr and "not meaningful" in shown.stderr
    out = shown.stdout
    leaderboard, report = out.index("Leaderboard"), out.index("Report")
    assert leaderboard < report and out.index("Headline") > report
    board = out[leaderboard:report]
    assert "not meaningful" in board and "Bar: jaccard" in board
    assert "val Jaccard" in board and "test Jaccard" in board
    for row in run["select"]["board"]:
        assert row["name"] in board and f"{row['val']['jaccard']:.3f}" in board and f"{row['test']['jaccard']:.3f}" in board
    assert board.count("selected") >= len(run["select"]["models"])
    assert "not meaningful" in out[report:out.index("Headline")]  # the report says so too, first


def test_the_gateway_serves_what_selection_chose_and_the_report_says_how_it_compares(finished):
    _, run, _ = finished
    selection = run["select"]
    report = run["aggregate"]
    summary = report["summary"]
    assert summary["served_mismatched_clips"] == 0  # the gateway combined exactly as chosen on validation
    assert summary["strategy"] == selection["aggregation"]["strategy"]
    assert summary["members"] == [c["name"] for c in selection["models"]]
    assert summary["baseline_member"] == selection["models"][0]["name"]
    assert summary["clips"] == QUICK["test_clips"] and summary["recall_gain"]["low"] <= summary["recall_gain"]["high"]
    markdown = report["markdown"].read_text()
    assert "deployable baseline" in markdown and "## Leaderboard" in markdown and "not meaningful" in markdown
    for member in summary["members"]:
        assert member in markdown
    assert report["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in report["html"].read_text()
    leaderboard = json.loads(selection["leaderboard"]["json"].read_text())
    assert [m["name"] for m in leaderboard["models"] if m["selected"]] == sorted(
        summary["members"], key=[m["name"] for m in leaderboard["models"]].index)
    assert leaderboard["run"]["id"] == run.id


def test_servers_are_gone_after_the_run(finished):
    project, run, _ = finished
    services = [t for t in run.tasks.values() if t.step in ("serve", "gateway")]
    assert len(services) == 3 and all(t.state == "succeeded" for t in services)
    home = str(project.home)
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if any(home in part for part in p.info["cmdline"] or [])]
    assert left == []  # each service process is started with a file in the run's store, and has ended


def test_serve_brings_the_run_back_up_without_retraining_and_predict_tags_clips(finished, tmp_path):
    project, run, _ = finished
    process = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", "serve", run.id,
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
        preview = run["ingest"]["previews"][0]
        answer = cli("predict", "--url", urls["gateway"], preview, "--json", check=True)
        clips = json.loads(answer.stdout)["clips"]
        assert len(clips) == 1 and all("found_by" in p for p in clips[0]["provenance"])
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0


@pytest.mark.ray
def test_on_ray_the_same_models_are_selected_and_the_same_report_comes_out(finished, tmp_path):
    _, local, _ = finished
    project = Project(tmp_path / ".fanflow")
    try:
        on_ray = project.run(apply_preset(load_workflow(WORKFLOW), "quick"), executor="ray")
    finally:
        project.close()
    assert on_ray.state == "succeeded", on_ray.error
    names = [c["name"] for c in on_ray.outputs("select")[0]["models"]]
    assert names == [c["name"] for c in local["select"]["models"]]
    ray_summary = on_ray.outputs("aggregate")[0]["summary"]
    local_summary = local["aggregate"]["summary"]
    for key in ("served", "baseline", "recall_gain", "strategy", "threshold"):
        assert ray_summary[key] == local_summary[key], key


def test_a_folder_of_the_users_own_videos_runs_through_the_same_workflow(tmp_path):
    from tests.ml.test_video_folder import make_folder

    make_folder(tmp_path / "videos", n=30, seed=1)
    project = Project(tmp_path / ".fanflow")
    try:
        params = {k: v for k, v in QUICK.items() if not k.endswith("_clips")}
        result = project.run(load_workflow(WORKFLOW), params={
            **params, "videos": str(tmp_path / "videos"), "models": ["cnn_batchnorm", "logistic"], "epochs": 2,
            "margin": -1.0})
    finally:
        project.close()
    assert result.state == "succeeded", result.error
    data = result.outputs("ingest")[0]
    assert data["report"]["source"] == "video_folder" and data["report"]["skipped"] == 0
    assert data["report"]["size"] == [64, 64]  # the videos' own size
    summary = result.outputs("aggregate")[0]["summary"]
    assert summary["clips"] == data["test"]["x"]["shape"][0] and summary["served_mismatched_clips"] == 0


def _make_videos():
    import importlib.util

    path = ROOT / "examples" / "video_entity_tagging" / "make_videos.py"
    spec = importlib.util.spec_from_file_location("make_videos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_videos_of_another_kind_that_miss_the_bar_still_leave_a_leaderboard_and_one_line(tmp_path):
    """Colour shapes of 48 and 64 pixels, 8 to 16 frames, MP4 and GIF, with a tags.txt: the
    clip format comes from the videos; with too little training no model reaches the bar, so
    the run writes the leaderboard, serves nothing and fails with one line saying by how much."""
    folder = _make_videos().make_folder("shapes", tmp_path / "shapes", clips=60, seed=2)
    result = cli("run", "video-entity-tagging", "-p", f"videos={folder}", "-p", "models=[cnn_batchnorm,logistic]",
                 "-p", "epochs=1", "-p", "min_steps=0", "-p", "size=32", "--home", tmp_path / ".fanflow",
                 timeout=600)
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("bar: ")]
    assert len(error) == 1, result.stderr
    assert "no model reached jaccard ≥" in error[0] and "short; try more training" in error[0]
    shown = result.stdout  # the summary still shows every model and why it was not chosen
    assert "Leaderboard" in shown and "cnn_batchnorm" in shown and "logistic" in shown
    assert shown.count("below") == 2 and "Report" not in shown
    leaderboard = Path(error[0].rsplit("leaderboard: ", 1)[1].strip())
    html_text = leaderboard.read_text()
    assert "cnn_batchnorm" in html_text and "below the bar" in html_text
    project = Project(tmp_path / ".fanflow")
    try:
        run = project.store.list_runs(1)[0]
        tasks = {t["name"]: t for t in project.store.tasks(run.id)}
    finally:
        project.close()
    assert tasks["select"]["state"] == "succeeded" and tasks["bar"]["state"] == "failed"
    assert all(t["state"] != "succeeded" for name, t in tasks.items() if name.startswith(("serve", "gateway")))
    board = tasks["select"]["output"]["board"]
    assert [row["name"] for row in board] and all(not row["selected"] for row in board)
    bar = tasks["select"]["output"]["bar"]  # some clips show no shape: the empty predictor scores above 0
    assert bar["trivial"]["empty"] > 0 and bar["effective"] >= bar["trivial"]["empty"] + bar["margin"]
    report = tasks["ingest"]["output"]["report"]
    assert report["size"] == [32, 32] and 8 <= report["frames"] <= 16
