"""The web UI on the reference workflow itself, run with its quick preset (real models
trained on small data, served by real model servers behind a real gateway), seen in a real
browser: the graph, the timeline, the leaderboard and report the workflow writes, and the
tagging page (tags with their provenance from a gateway the page starts, and the degraded
banner once one of its members is killed)."""

from __future__ import annotations

import psutil
import pytest

from fanflow.history import History
from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.spec.presets import apply_preset
from tests.conftest import ROOT
from tests.ui.conftest import screenshot, serve_ui

pytestmark = pytest.mark.slow

REFERENCE = ROOT / "examples" / "video_entity_tagging" / "workflow.yaml"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    home = tmp_path_factory.mktemp("reference-ui") / ".fanflow"
    project = Project(home)
    try:
        result = project.run(apply_preset(load_workflow(REFERENCE), "quick"))
    finally:
        project.close()
    assert result.state == "succeeded", result.error
    server = serve_ui(home)
    yield home, result, server
    server.stop()


def test_the_run_page_shows_the_graph_timeline_leaderboard_and_report(page, reference, tmp_path):
    _, result, server = reference
    page.goto(f"{server.url}/runs/{result.run_id}")
    assert page.locator("#node-train .summary").text_content() == "2 of 2 succeeded"
    assert page.locator("#node-select .extra").text_content().endswith("2 of 2 ok")
    assert "service" in page.locator("#node-gateway .fn").text_content()
    screenshot(page, "reference-graph", tmp_path, ".graph-box")
    page.wait_for_function("() => document.getElementById('timeline').height > 60")
    lanes = page.evaluate("() => document.getElementById('timeline').height")
    assert lanes > 60
    screenshot(page, "reference-timeline", tmp_path, ".timeline-box")
    board = page.locator("section#leaderboard")
    rows = board.locator("table.board tbody tr")
    assert rows.count() == 2 and board.locator("tr.selected").count() == 2
    assert board.locator("svg.chart line.mark").count() == 1  # the bar, drawn
    screenshot(page, "reference-leaderboard", tmp_path, "section#leaderboard")
    assert "not meaningful" in board.locator(".caveat").inner_text()  # the quick preset says so
    report = page.locator("section#report")
    assert "not meaningful" in report.locator(".caveat").inner_text()
    assert report.locator("p.verdict").inner_text()  # the report's verdict, from its JSON
    assert report.locator("table.rows tbody tr").count() >= 3  # members, combinations, baseline
    assert report.locator("svg.chart").count() == 2  # recall per entity, errors per clip
    screenshot(page, "reference-report", tmp_path, "section#report")
    page.click("#node-train")
    page.click(".branch-list a.task-link >> nth=0")
    card = page.locator("#panel figure.k-card")
    assert "Model card" in card.inner_text()


def test_the_tagging_page_shows_tags_with_provenance_and_a_degraded_banner_once_a_member_dies(
        page, reference, tmp_path):
    home, result, server = reference
    page.goto(f"{server.url}/tag?run={result.run_id}")
    page.click("button:text('Start the gateway')")  # fanflow serve RUN, started by the page
    page.wait_for_selector("#gateway-url", timeout=240_000)
    page.click("button.clip >> nth=0")
    answer = page.locator("#answer .tags-answer")
    answer.wait_for()
    assert answer.locator(".degraded").count() == 0
    assert "ensemble answered in" in answer.locator(".latency").inner_text()
    tags = answer.locator("li.tag")
    assert tags.count() >= 1
    for tag in tags.all():  # each tag names the models that found it, with their scores
        assert tag.locator(".member.found").count() >= 1 or "combined score" in tag.inner_text()
    assert answer.locator(".clip-shown img").evaluate("img => img.naturalWidth") > 0  # the clip plays
    screenshot(page, "tagging", tmp_path)

    # The run that serves them shows its services with their URLs while they serve.
    gateway_url = page.inner_text("#gateway-url")
    killed, pid, serving = _a_member(home, result.run_id)
    graph = page.context.new_page()
    graph.goto(f"{server.url}/runs/{serving}")
    assert graph.locator("#node-gateway .extra").text_content() == gateway_url
    assert "serving" in graph.get_attribute("#node-gateway", "class")
    graph.close()

    # Kill one member's server: until the run brings it back, the gateway answers without it.
    psutil.Process(pid).kill()
    page.click("button.clip >> nth=0")
    banner = page.locator("#answer .degraded")
    banner.wait_for()
    assert banner.locator(".member").inner_text() == killed
    assert "did not answer" in banner.inner_text()
    for tag in page.locator("#answer li.tag").all():
        assert killed not in tag.locator(".found-by").inner_text()
    screenshot(page, "tagging-degraded", tmp_path)


def _a_member(home, run_id: str) -> tuple[str, int, str]:
    """The name of a model server the page's gateway asks (not the best one, whose tags stay
    on the page), the pid listening for it, and the run that serves it."""
    project = Project(home)
    try:
        history = History(project)
        serving = next(r for r in history.find() if r.resumed_from == run_id)
        second = history.task(run_id, "bar").manifest[1]["name"]
        member = next(task.manifest for task in history.tasks(serving.id, step="serve")
                      if task.manifest["model"] == second)
    finally:
        project.close()
    port = int(member["url"].rsplit(":", 1)[1])
    pid = next(c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port)
    return member["model"], pid, serving.id
