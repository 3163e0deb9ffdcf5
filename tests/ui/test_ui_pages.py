"""The web UI in a real browser over a real run store: the runs list, a run's page and its
task panel, the launch form (a run started from it goes on live in the page), cancel and
resume, comparing runs, and names and values that look like HTML shown as text."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from fanflow.history import History
from fanflow.project import Project
from tests.ui.conftest import PAGES, run_pages, screenshot, serve_ui

XSS = "<script>alert(1)</script>"

# Installed before any script of the page runs: notes when a step's node changes state, in
# sessionStorage (which survives the page reloading itself at the end of the run).
WATCH_NODES = """
(() => {
  const origin = performance.timeOrigin;
  const note = (step, state) => {
    const seen = JSON.parse(sessionStorage.getItem("changes") || "[]");
    seen.push({step, state, at: Date.now() / 1000, origin});
    sessionStorage.setItem("changes", JSON.stringify(seen));
  };
  new MutationObserver((records) => {
    for (const r of records) {
      const node = r.target;
      if (r.attributeName === "class" && node.dataset && node.dataset.step) {
        const state = (node.getAttribute("class").match(/\\bs-([a-z]+)/) || [])[1];
        note(node.dataset.step, state);
      }
    }
  }).observe(document, {subtree: true, attributes: true, attributeFilter: ["class"]});
  window.__origin = origin;
})();
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A project with two finished runs of the pages workflow, and the UI over it."""
    home = tmp_path_factory.mktemp("ui-pages") / ".fanflow"
    first = run_pages(home)
    second = run_pages(home, n=5)
    server = serve_ui(home, workflows=[PAGES])
    yield home, first, second, server
    server.stop()


def test_the_runs_list_shows_a_finished_run(page, store, tmp_path):
    _, first, second, server = store
    page.goto(server.url + "/")
    row = page.locator(f"#run-{first.run_id}")
    assert row.locator(".badge").inner_text() == "succeeded"
    assert "ui-pages" in row.inner_text()
    assert row.locator(".count.s-failed").inner_text() == "1"  # the branch that fails, within the quorum
    assert page.locator("tr.run").count() == 2
    assert page.locator("tr.run").first.get_attribute("id") == f"run-{second.run_id}"  # newest first
    screenshot(page, "runs", tmp_path)


def test_the_runs_list_filters_and_sorts(page, store):
    _, first, second, server = store
    page.goto(server.url + "/runs?q=%22n%22%3A+5")  # the parameters as stored: {"n": 5, ...}
    assert [r.get_attribute("id") for r in page.locator("tr.run").all()] == [f"run-{second.run_id}"]
    page.goto(server.url + "/runs?sort=started&order=asc")
    assert page.locator("tr.run").first.get_attribute("id") == f"run-{first.run_id}"
    page.goto(server.url + "/runs?state=failed")
    assert page.locator("tr.run").count() == 0 and "match these filters" in page.inner_text("table.runs")


def test_a_failing_tasks_traceback_and_logs_are_two_clicks_away(page, store, tmp_path):
    _, first, _, server = store
    page.goto(server.url + "/")
    page.click(f"#run-{first.run_id} a.run-link")  # one
    page.click(".failures a.task-link")  # two
    panel = page.locator("#panel .task-panel")
    assert panel.get_attribute("data-task") == "square[x=3]"
    traceback = panel.locator("pre.traceback").first
    assert "Traceback (most recent call last)" in traceback.inner_text()
    assert "ValueError: <script>alert(1)</script> cannot be squared" in traceback.inner_text()
    logs = panel.locator("details[open] pre.log")
    page.wait_for_function("() => document.querySelectorAll('#panel details[open] pre.log')[1].textContent.length")
    assert logs.nth(0).inner_text() == "squaring 3\n"
    assert logs.nth(1).inner_text() == "three is about to fail\n"
    assert panel.locator("details.attempt").count() == 2  # the retry is there too
    screenshot(page, "task-panel", tmp_path, "#panel")


def test_a_fan_out_is_one_node_that_opens_to_its_branches(page, store):
    _, first, _, server = store
    page.goto(f"{server.url}/runs/{first.run_id}")
    node = page.locator("#node-square")
    assert "s-failed" in node.get_attribute("class")
    assert node.locator(".summary").text_content() == "3 of 4 succeeded · 1 failed"
    assert page.locator("#node-total .extra").text_content() == "quorum ≥ 2: 3 of 4 ok"
    node.click()
    rows = page.locator(".branch-list tbody tr")
    expect(rows).to_have_count(4)
    page.click(".branch-list a[data-state=failed]")
    expect(rows).to_have_count(1)
    page.click(".branch-list a.task-link")
    assert page.locator("#panel .task-panel").get_attribute("data-task") == "square[x=3]"
    assert page.locator("#timeline").evaluate("c => c.width") > 0


def test_names_and_values_that_look_like_html_are_shown_as_text(page, store):
    _, first, _, server = store
    page.goto(server.url + "/")
    assert f"label={XSS}" in page.locator(f"#run-{first.run_id} td.params").inner_text()
    page.goto(f"{server.url}/runs/{first.run_id}")
    assert XSS in page.locator(".failures").inner_text()
    page.click("#node-echo")
    assert f"echo[text={XSS}]" in page.locator(".branch-list").inner_text()
    page.click(f".branch-list a.task-link[data-task='echo[text={XSS}]']")
    assert page.locator("#panel h2").inner_text().startswith(f"echo[text={XSS}]")
    assert XSS in page.locator("#panel .output").inner_text()
    page.goto(f"{server.url}/launch?workflow={quote(str(PAGES))}")
    assert page.input_value("#p-label") == XSS
    assert "A <b>text</b> shown as it is." in page.inner_text(".help >> nth=3")
    # No script came from the data: every script element is the UI's own file or JSON data.
    for url in ("/", f"/runs/{first.run_id}"):
        page.goto(server.url + url)
        stray = page.evaluate("""() => [...document.querySelectorAll('script')]
            .filter(s => !s.src && s.type !== 'application/json').length""")
        assert stray == 0


def test_a_run_started_from_the_launch_form_appears_and_goes_on_live(page, store, tmp_path):
    home, *_, server = store
    page.add_init_script(WATCH_NODES)
    page.goto(server.url + "/launch")
    page.click("ul.workflows a:text-is('ui-pages')")
    page.fill("#p-n", "three")
    page.click("button:text('Start the run')")
    assert page.locator(".field.invalid .field-error").inner_text() == "expected a value of type int, got 'three'"
    gate = tmp_path / "gate"  # the wait step goes on until this file appears
    page.fill("#p-n", "3")
    page.fill("#p-pause", "600")
    page.fill("#p-gate", str(gate))
    screenshot(page, "launch", tmp_path)
    page.click("button:text('Start the run')")
    page.wait_for_url(f"{server.url}/runs/2*")
    run_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#node-wait.s-running")
    screenshot(page, "run-live", tmp_path)
    page.click("#node-wait")  # its panel shows what the running step reported, as it comes
    progress = page.locator("#panel #task-progress")
    progress.locator("progress.bar").wait_for()
    assert progress.get_attribute("data-live")
    assert progress.locator("progress.bar").get_attribute("value") == "0.5"
    assert progress.locator(".count").inner_text() == "1/2 stages"
    assert progress.locator("table.metrics").inner_text().split() == ["numbers", "3"]
    assert progress.locator(".message").inner_text().endswith("waiting for the gate")
    screenshot(page, "task-progress", tmp_path, "#panel")
    gate.write_text("open")
    page.wait_for_selector("#run-state.s-succeeded", timeout=120_000)
    # Its final report, once the panel's own reload finds the task over (and stops reloading).
    page.wait_for_selector("#panel #task-progress:not([data-live])", timeout=10_000)
    assert page.locator("#panel #task-progress .count").inner_text() == "2/2 stages"
    changes = page.evaluate("() => JSON.parse(sessionStorage.getItem('changes'))")
    done = [c for c in changes if c["step"] == "wait" and c["state"] == "succeeded"]
    assert done, changes
    # It changed in the page that was open (no reload): the document is the one first loaded.
    first_origin = next(c["origin"] for c in changes if c["step"] == "wait")
    assert done[0]["origin"] == first_origin
    project = Project(home)
    try:
        wait = History(project).task(run_id, "wait")
    finally:
        project.close()
    print(f"the wait node turned succeeded {done[0]['at'] - wait.ended:.2f} s after the store recorded it")
    page.goto(server.url + "/")
    assert page.locator(f"#run-{run_id} .badge").inner_text() == "succeeded"


def test_a_live_run_can_be_cancelled_and_resumed_from_its_page(page, store, tmp_path):
    home, *_, server = store
    gate = tmp_path / "gate"
    page.goto(f"{server.url}/launch?workflow={quote(str(PAGES))}")
    page.fill("#p-pause", "600")
    page.fill("#p-gate", str(gate))
    page.click("button:text('Start the run')")
    page.wait_for_selector("#node-wait.s-running")
    cancelled = page.url.rsplit("/", 1)[1]
    page.click("button:text('Cancel run')")
    page.wait_for_selector("#run-state.s-cancelled", timeout=60_000)
    assert "s-cancelled" in page.get_attribute("#node-wait", "class")
    gate.write_text("open")
    page.click("button:text('Resume')")
    page.wait_for_url(lambda url: cancelled not in url and "/runs/2" in url)
    assert page.locator(".run-head .meta a").inner_text() == cancelled  # "resumes ..."
    page.wait_for_selector("#run-state.s-succeeded", timeout=120_000)
    resumed = page.url.rsplit("/", 1)[1]
    project = Project(home)
    try:
        history = History(project)
        assert history.summary(cancelled).state == "cancelled"
        assert history.task(resumed, "numbers").cached  # what the cancelled run did is kept
        assert not history.task(resumed, "wait").cached
    finally:
        project.close()


def test_two_runs_compared_side_by_side_with_differences_highlighted(page, store, tmp_path):
    _, first, second, server = store
    page.goto(server.url + "/")
    page.check(f"#run-{first.run_id} input[type=checkbox]")
    page.check(f"#run-{second.run_id} input[type=checkbox]")
    page.click("button:text('Compare')")
    rows = page.locator("table.compare tr.differs")
    keys = [r.locator("th").inner_text() for r in rows.all()]
    assert "n" in keys and "total.sum" in keys and "square[x=4]" in keys
    n = page.locator("table.compare tr.differs", has=page.locator("th:text-is('n')"))
    assert n.locator("td").all_inner_texts() == ["4", "5", "+1"]
    assert page.locator("table.compare tr.same", has=page.locator("th:text-is('label')")).count() == 1
    screenshot(page, "compare", tmp_path)
    page.check("#only-differences")
    assert not page.locator("table.compare tr.same").first.is_visible()
