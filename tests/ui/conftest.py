"""Fixtures of the web UI's tests: a real UI server on a loopback port over a real run store,
and a real browser (Debian's Chromium driven by Playwright), one per test module.

Screenshots the tests take go to ``$FANFLOW_UI_SCREENSHOTS`` when it is set (docs/ui.md's
pictures: ``FANFLOW_UI_SCREENSHOTS=docs/ui pytest tests/ui``), else to a temporary folder."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from fanflow.project import Project
from fanflow.spec.loader import load_workflow
from fanflow.ui.app import Served, create_app

FLOWS = Path(__file__).parent / "flows"
PAGES = FLOWS / "pages.yaml"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 860}


def run_pages(home: Path, **params):
    """A finished run of the pages workflow (recorded in ``home``)."""
    project = Project(home)
    try:
        return project.run(load_workflow(PAGES), params=params)
    finally:
        project.close()


def serve_ui(home: Path, workflows=()) -> Served:
    """``fanflow ui`` in a thread of the test process, on a free loopback port."""
    return Served(create_app(home, workflows=list(workflows)))


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watched:
    """A page and what it did that a test must not miss: dialogs opened, script errors."""

    def __init__(self, page):
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: self.errors.append(str(error)))


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    watched = Watched(context.new_page())
    watched.page.set_default_timeout(60_000)
    yield watched.page
    context.close()
    assert not watched.dialogs, f"the page opened dialogs: {watched.dialogs}"
    assert not watched.errors, f"the page's scripts failed: {watched.errors}"


def screenshot(page, name: str, tmp_path: Path, selector: str | None = None) -> Path:
    """A PNG of the page (or one element of it), its colours reduced to keep it small."""
    from PIL import Image

    folder = Path(os.environ.get("FANFLOW_UI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    raw = page.locator(selector).screenshot() if selector else page.screenshot()
    image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=128)
    path = folder / f"{name}.png"
    image.save(path, optimize=True)
    return path
