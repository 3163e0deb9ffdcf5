"""The web UI's server seen from outside, over real HTTP: what it refuses (other sites'
requests, unknown host names, files no task stored, uploads too large or not videos), the
headers that keep stored HTML in a sandbox, its live stream, and the commands that start it
(``fanflow ui``, ``fanflow run --ui``) bound to 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fanflow.history import History
from fanflow.ml.video import write_video
from fanflow.project import Project
from tests.conftest import write
from tests.ui.conftest import FLOWS, PAGES, run_pages, serve_ui


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-server") / ".fanflow"
    result = run_pages(home)
    server = serve_ui(home, workflows=[PAGES])
    client = httpx.Client(base_url=server.url, timeout=60, follow_redirects=False)
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    yield home, result, server, client, token
    client.close()
    server.stop()


def test_a_state_changing_request_without_the_pages_token_is_refused(served):
    _, result, _, client, token = served
    form = {"workflow": str(PAGES), "p.n": "3"}
    assert client.post("/launch", data=form).status_code == 403
    assert client.post("/launch", data={**form, "csrf": "guessed"}).status_code == 403
    other_site = client.post("/launch", data={**form, "csrf": token}, headers={"origin": "http://evil.example"})
    assert other_site.status_code == 403
    assert client.post(f"/runs/{result.run_id}/cancel", headers={"sec-fetch-site": "cross-site",
                                                                 "x-csrf-token": token}).status_code == 403
    # With the token, from the page itself: checked like `fanflow run -p` would check it.
    refused = client.post("/launch", data={**form, "p.n": "many", "csrf": token})
    assert refused.status_code == 400 and "expected a value of type int, got &#39;many&#39;" in refused.text


def test_only_the_ui_host_names_are_answered(served):
    _, _, server, client, _ = served
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"host": server.url.removeprefix("http://").replace("127.0.0.1", "localhost")}).status_code == 200


def test_pages_run_only_the_uis_own_scripts(served):
    _, result, _, client, _ = served
    page = client.get(f"/runs/{result.run_id}")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert page.headers["x-frame-options"] == "DENY"


def test_stored_files_are_served_under_readable_names_and_nothing_else(served, tmp_path):
    home, result, _, client, _ = served
    project = Project(home)
    try:
        wait = History(project).task(result.run_id, "wait")
    finally:
        project.close()
    assert wait.manifest == [0, 1, 2, 3]  # plain values stay inline: no file to serve
    missing = client.get(f"/runs/{result.run_id}/file/sha256:{'0' * 64}", params={"task": "wait"})
    assert missing.status_code == 404


def test_an_html_report_is_served_in_a_sandbox(tmp_path):
    folder = tmp_path / "flows"
    folder.mkdir()
    write(folder, "report_steps.py", '''
        from pathlib import Path

        from fanflow.runtime import scratch_dir

        def report() -> dict:
            page = Path(scratch_dir()) / "report.html"
            page.write_text("<h1>Report</h1><script>parent.document.title = 'owned'</script>")
            return {"html": page}
        ''')
    flow = write(folder, "report.yaml", """
        name: reports
        steps:
          report: {uses: "report_steps:report"}
        """)
    home = tmp_path / ".fanflow"
    project = Project(home)
    from fanflow.spec.loader import load_workflow

    try:
        run = project.run(load_workflow(flow))
        task = History(project).task(run.run_id, "report")
    finally:
        project.close()
    server = serve_ui(home)
    try:
        digest = task.manifest["html"]["$artifact"]
        served = httpx.get(f"{server.url}/runs/{run.run_id}/file/{digest}", params={"task": "report"})
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
        assert served.headers["content-security-policy"].startswith("sandbox;")
        download = httpx.get(f"{server.url}/runs/{run.run_id}/file/{digest}", params={"task": "report", "download": 1})
        assert download.headers["content-disposition"] == 'attachment; filename="report-report.html"'
        page = httpx.get(f"{server.url}/runs/{run.run_id}").text
        assert re.search(r'<iframe class="stored" sandbox="" src="[^"]+"', page)
    finally:
        server.stop()


def test_the_live_stream_sends_the_whole_state_then_ends_with_a_finished_run(served):
    _, result, _, client, _ = served
    with client.stream("GET", f"/runs/{result.run_id}/stream") as stream:
        lines = [line for line in stream.iter_lines() if line.startswith(("data:", "event:"))]
    message = json.loads(lines[0].removeprefix("data: "))
    assert message["run"]["state"] == "succeeded"
    assert message["steps"]["square"]["counts"] == {"succeeded": 3, "failed": 1}
    assert message["steps"]["total"]["quorum_state"] == "met"
    assert len(message["tasks"]) == 1 + 1 + 4 + 2 + 1
    assert {a[0] for a in message["attempts"]} >= {"numbers", "square[x=3]"}
    assert lines[-2:] == ["event: end", "data: {}"]


def test_timeline_lists_every_attempt_with_its_worker(served):
    _, result, _, client, _ = served
    data = client.get(f"/runs/{result.run_id}/timeline.json").json()
    failed = [a for a in data["attempts"] if a[0] == "square[x=3]"]
    assert [a[1] for a in failed] == [1, 2] and all(a[2] for a in failed)
    assert all(a[3] <= a[4] for a in data["attempts"])


@pytest.fixture(scope="module")
def gateway_url(served):
    """No gateway: the upload checks come before any gateway is asked."""
    return "http://127.0.0.1:9"


def test_uploads_are_bounded_in_size_and_type(served, gateway_url, tmp_path):
    _, _, _, client, token = served
    headers = {"x-csrf-token": token}
    big = client.post("/tag", headers=headers, data={"gateway": gateway_url},
                      files={"video": ("long.mp4", bytes(21 << 20), "video/mp4")})
    assert big.status_code == 413 and "at most 20 MB" in big.text
    text = client.post("/tag", headers=headers, data={"gateway": gateway_url},
                       files={"video": ("notes.txt", b"hello", "text/plain")})
    assert text.status_code == 422 and "notes.txt: expected a video" in text.text


def test_an_upload_is_decoded_with_the_data_sources_checks_then_deleted(served, tmp_path):
    """Against a real model server: a file that does not decode is refused by its name; a
    real video is decoded to the server's clip shape and tagged."""
    from tests.serving.serving_helpers import ServerProcess
    from tests.serving.serving_predictors import BrightnessTagger

    _, _, _, client, token = served
    model = BrightnessTagger().save(tmp_path / "bright.json")
    server = ServerProcess("fanflow.serving.model_server", "--model", str(model), "--name", "bright",
                           "--loader", "tests.serving.serving_predictors:load_tagger", "--port", "0")
    before = set(Path(tempfile.gettempdir()).glob("fanflow-upload-*"))
    try:
        broken = client.post("/tag", headers={"x-csrf-token": token}, data={"gateway": server.url},
                             files={"video": ("holiday.mp4", b"\x00\x00\x00\x18ftypmp42 not really", "video/mp4")})
        assert broken.status_code == 422 and "holiday.mp4: unreadable video" in broken.text
        bright = np.zeros((6, 32, 32), dtype=np.uint8)
        bright[:, :16, :16] = 255  # the top-left region: tag r0c0
        clip = write_video(bright, tmp_path / "corner.mp4")
        good = client.post("/tag", headers={"x-csrf-token": token}, data={"gateway": server.url},
                           files={"video": ("corner.mp4", clip.read_bytes(), "video/mp4")})
        assert good.status_code == 200 and "bright answered in" in good.text
        assert re.search(r'<span class="tag-name">r0c0</span>', good.text)
        assert 'src="data:image/gif;base64,' in good.text  # the decoded clip, to watch
    finally:
        server.close()
    assert set(Path(tempfile.gettempdir()).glob("fanflow-upload-*")) == before  # nothing left behind


def _serving_process(command: list[str], home: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "fanflow.cli.main", *command, "--home", str(home)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=FLOWS,
                               env={"PYTHONUNBUFFERED": "1", **__import__("os").environ})
    deadline = time.time() + 120
    for line in process.stderr:
        found = re.search(r"(http://127\.0\.0\.1:\d+)\S*", line)
        if found:
            return process, found.group(0)
        if time.time() > deadline:
            break
    process.kill()
    raise AssertionError(f"no URL printed by fanflow {' '.join(command)}")


def test_fanflow_ui_serves_the_projects_store_on_loopback(served):
    home, result, *_ = served
    process, url = _serving_process(["ui", "--port", "0"], home)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert result.run_id in httpx.get(url + "/").text
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


def test_fanflow_run_with_ui_shows_the_run_it_runs(tmp_path):
    process, url = _serving_process(["run", str(PAGES), "-p", "pause=1", "--ui", "--ui-port", "0"],
                                    tmp_path / ".fanflow")
    try:
        run_id = url.rsplit("/", 1)[1]
        assert "/runs/" in url and "ui-pages" in httpx.get(url, timeout=30).text
        deadline = time.time() + 120
        while time.time() < deadline and '"state":"succeeded"' not in httpx.get(url + "/stream", timeout=30).text:
            time.sleep(0.5)
        assert httpx.get(url.rsplit("/runs/", 1)[0] + f"/runs/{run_id}/timeline.json").json()["ended"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
