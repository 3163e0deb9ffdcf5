"""Web UI benchmarks, in Debian's Chromium driven by Playwright, over real runs:

- the run page of a run with a fan-out of 10,000 tasks: time to first paint, and whether it
  stays scrollable (the frames while the page scrolls over the graph, the timeline of every
  attempt and a page of branches);
- the runs list of a store with 1,000 runs: time to first paint (its first page of 200 runs,
  and all 1,000 on one page);
- the live stream of a 10,000-task run that is going on: the page's memory (its renderer
  process, and the JavaScript heap) from start to end, and how long after the store
  recorded a change the page showed it.

Prints a table; ``--json`` prints the figures as JSON. Targets: first paint under 1 s,
memory under 200 MB, a change on the page within 2 s of the store.

    python benchmarks/bench_ui.py
    python benchmarks/bench_ui.py --tasks 2000 --runs 200   # smaller, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fanflow.background import start  # noqa: E402
from fanflow.engine.runner import new_run_id  # noqa: E402
from fanflow.history import History  # noqa: E402
from fanflow.project import Project  # noqa: E402
from fanflow.spec.loader import workflow_from_dict  # noqa: E402
from fanflow.ui.app import Served, create_app  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SOURCE = str(HERE / "noop_steps.py")

# Frame intervals while the page scrolls from top to bottom and back, in requestAnimationFrame.
SCROLL = """async () => {
  const frames = [];
  let last = performance.now();
  const end = document.documentElement.scrollHeight - innerHeight;
  for (const target of [end, 0, end]) {
    const from = scrollY, steps = 40;
    for (let i = 1; i <= steps; i++) {
      await new Promise((r) => requestAnimationFrame(r));
      const now = performance.now(); frames.push(now - last); last = now;
      scrollTo(0, from + (target - from) * i / steps);
    }
  }
  frames.sort((a, b) => a - b);
  return {frames: frames.length, p95: frames[Math.floor(frames.length * 0.95)], max: frames[frames.length - 1],
          height: document.documentElement.scrollHeight};
}"""


def fan_out(n: int, step: dict) -> dict:
    return workflow_from_dict({"name": f"fan-out-{n}", "steps": {
        "make": {"uses": "noop_steps:make", "with": {"n": n}},
        "work": {**step, "fan_out": {"x": "${make}"}},
        "add": {"uses": "noop_steps:add", "with": {"values": "${work[*]}"}},
    }}, source=SOURCE)


def first_paint(page, url: str) -> dict:
    page.goto(url, wait_until="load")
    timing = page.evaluate("""() => new Promise((resolve) => {
      new PerformanceObserver((list, observer) => {
        const paint = list.getEntriesByName('first-contentful-paint')[0];
        if (!paint) return;
        observer.disconnect();
        const nav = performance.getEntriesByType('navigation')[0];
        resolve({server_ms: nav.responseStart - nav.requestStart, html_kb: nav.transferSize / 1000,
                 first_paint_ms: paint.startTime, load_ms: nav.loadEventEnd});
      }).observe({type: 'paint', buffered: true});
    })""")
    return {k: round(v, 1) for k, v in timing.items()}


def paints(page, url: str, again: int = 3) -> dict:
    """The first load of ``url`` (nothing cached), and the median of ``again`` more."""
    cold = first_paint(page, url)
    warm = [first_paint(page, url) for _ in range(again)]
    return {"cold": cold, "warm": {key: statistics.median(w[key] for w in warm) for key in cold}}


def renderer_mb() -> float:
    """The memory of the page's renderer: the largest private memory (USS) among the
    browser's renderer processes (this process's descendants; the page's is the one that
    holds it)."""
    found = 0
    for child in psutil.Process().children(recursive=True):
        try:
            if "--type=renderer" in " ".join(child.cmdline()):
                found = max(found, child.memory_full_info().uss)
        except psutil.Error:
            continue
    return round(found / 1e6, 1)


def heap_mb(page) -> float:
    session = page.context.new_cdp_session(page)
    session.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}
    session.detach()
    return round(metrics["JSHeapUsedSize"] / 1e6, 1)


def big_run_page(browser, home: Path, server: Served, n: int) -> dict:
    project = Project(home)
    started = time.perf_counter()
    result = project.run(fan_out(n, {"uses": "noop_steps:noop", "with": {"x": "${item.x}"}}), cache=False)
    ran = time.perf_counter() - started
    project.close()
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    loads = paints(page, f"{server.url}/runs/{result.run_id}")
    page.click("#node-work")
    page.wait_for_selector(".branch-list tbody tr")
    page.wait_for_function("() => document.getElementById('timeline').height > 40")
    scroll = page.evaluate(SCROLL)
    page.close()
    return {"tasks": n + 2, "run_s": round(ran, 1), **loads,
            "scroll_p95_ms": round(scroll["p95"], 1), "scroll_max_ms": round(scroll["max"], 1),
            "page_px": scroll["height"]}


def runs_list(browser, home: Path, server: Served, count: int) -> dict:
    project = Project(home)
    flow = workflow_from_dict({"name": "tiny", "params": {"i": 0}, "steps": {
        "one": {"uses": "noop_steps:noop", "with": {"x": "${params.i}"}, "executor": "thread"}}}, source=SOURCE)
    started = time.perf_counter()
    for i in range(count):  # ids of their own: several runs start within a second
        project.runner(flow, params={"i": i}, cache=False, run_id=f"{new_run_id()}-{i:04d}").run()
    made = time.perf_counter() - started
    project.close()
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page_of_200 = paints(page, f"{server.url}/runs")
    all_runs = paints(page, f"{server.url}/runs?limit={count}")
    rows = page.locator("tr.run").count()
    page.close()
    return {"runs": count, "made_s": round(made, 1), "first_page": page_of_200, "all": all_runs, "rows": rows}


# Notes each change of the work step's count of succeeded tasks, in sessionStorage (which
# survives the page reloading itself when the run ends).
WATCH_COUNT = """
addEventListener('DOMContentLoaded', () => {  // changes made live, not the page as it loads
  const summary = document.querySelector('#node-work .summary');
  if (!summary) return;
  new MutationObserver(() => {
    const seen = JSON.parse(sessionStorage.getItem('counts') || '[]');
    seen.push([Date.now() / 1000, parseInt(summary.textContent)]);
    sessionStorage.setItem('counts', JSON.stringify(seen));
  }).observe(summary, {characterData: true, childList: true, subtree: true});
});
"""


def live_stream(browser, home: Path, server: Served, n: int, nap: float) -> dict:
    """Open the page of a 10,000-task run as it starts; sample its memory until it ends, and
    how long after the store had each count of succeeded tasks the page showed it."""
    flow = home.parent / "live.yaml"
    flow.write_text(json.dumps({"name": f"live-{n}", "steps": {
        "make": {"uses": "noop_steps:make", "with": {"n": n}},
        "work": {"uses": "noop_steps:nap", "fan_out": {"x": "${make}"}, "with": {"seconds": nap, "x": "${item.x}"}},
        "add": {"uses": "noop_steps:add", "with": {"values": "${work[*]}"}}}}))
    shutil.copy(SOURCE, home.parent / "noop_steps.py")
    launched = start(flow, home=home, cache=False)
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.add_init_script(WATCH_COUNT)
    page.goto(f"{server.url}/runs/{launched.run_id}")
    page.click("#node-work")  # a page of branches, updated live too
    samples = []
    while launched.alive():
        samples.append((renderer_mb(), heap_mb(page)))
        page.wait_for_timeout(1000)
    page.wait_for_selector("#run-state.s-succeeded", timeout=120_000)
    samples.append((renderer_mb(), heap_mb(page)))
    shown = page.evaluate("() => JSON.parse(sessionStorage.getItem('counts') || '[]')")
    page.close()
    project = Project(home)
    try:
        ended = sorted(t.ended for t in History(project).tasks(launched.run_id, step="work", states=["succeeded"]))
    finally:
        project.close()
    # The store had `count` succeeded tasks from the moment the count-th of them ended.
    lags = [at - ended[count - 1] for at, count in shown if count and 0 < count <= len(ended)]
    return {"tasks": n + 2, "samples": len(samples), "renderer_peak_mb": max(s[0] for s in samples),
            "renderer_end_mb": samples[-1][0], "heap_peak_mb": max(s[1] for s in samples),
            "heap_end_mb": samples[-1][1], "updates": len(lags),
            "lag_median_s": round(statistics.median(lags), 2) if lags else None,
            "lag_max_s": round(max(lags), 2) if lags else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--nap", type=float, default=0.005, help="seconds each task of the live run sleeps")
    parser.add_argument("--only", choices=["run_page", "runs_list", "live"], action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    executable = shutil.which("chromium")
    if executable is None:
        sys.exit("Chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    figures: dict = {"cores": os.cpu_count()}
    jobs = {"run_page": lambda *a: big_run_page(*a, args.tasks), "runs_list": lambda *a: runs_list(*a, args.runs),
            "live": lambda *a: live_stream(*a, args.tasks, args.nap)}
    with tempfile.TemporaryDirectory(prefix="fanflow-bench-ui-") as folder, sync_playwright() as playwright:
        for name, job in jobs.items():  # a browser each: the page's renderer is then the only big one
            if args.only and name not in args.only:
                continue
            home = Path(folder) / name / ".fanflow"
            home.mkdir(parents=True)
            server = Served(create_app(home))
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                figures[name] = job(browser, home, server)
            finally:
                browser.close()
                server.stop()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"fanflow web UI benchmarks · Chromium · {figures['cores']} cores")
    if "run_page" in figures:
        r = figures["run_page"]
        print(f"  run page, {r['tasks']} tasks: first paint {r['cold']['first_paint_ms']:.0f} ms the first time, "
              f"then {r['warm']['first_paint_ms']:.0f} ms (server {r['warm']['server_ms']:.0f} ms, "
              f"{r['warm']['html_kb']:.0f} kB) (target < 1000 ms)")
        print(f"    scrolling over graph, timeline and branches ({r['page_px']} px): frames p95 {r['scroll_p95_ms']} "
              f"ms, longest {r['scroll_max_ms']} ms")
    if "runs_list" in figures:
        runs = figures["runs_list"]
        first, every = runs["first_page"], runs["all"]
        print(f"  runs list, {runs['runs']} runs: first paint {first['cold']['first_paint_ms']:.0f} ms the first "
              f"time, then {first['warm']['first_paint_ms']:.0f} ms for the newest 200 (server "
              f"{first['warm']['server_ms']:.0f} ms); all {runs['rows']} on one page "
              f"{every['warm']['first_paint_ms']:.0f} ms (server {every['warm']['server_ms']:.0f} ms) (target < 1000 ms)")
    if "live" in figures:
        v = figures["live"]
        print(f"  live stream, {v['tasks']} tasks: page renderer peak {v['renderer_peak_mb']} MB, at the end "
              f"{v['renderer_end_mb']} MB; JS heap peak {v['heap_peak_mb']} MB ({v['samples']} samples) "
              f"(target < 200 MB)")
        print(f"    {v['updates']} counts shown as the tasks ended: median {v['lag_median_s']} s, at most "
              f"{v['lag_max_s']} s after the store had them (target < 2 s)")


if __name__ == "__main__":
    main()
