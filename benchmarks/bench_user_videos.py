"""The reference workflow on a user's own videos, with its defaults: two kinds of labelled
videos unlike the built-in digits (``examples/video_entity_tagging/make_videos.py``) go
through ``fanflow run video-entity-tagging -p videos=DIR``, as a user would run it.

For each folder it prints the run's wall time and the machine's load, the clip format chosen
from the videos, every model's validation and test Jaccard and how many tags per clip it
emits on validation (none emitting nothing), the training fan-out's wall time against the
sum of its branches, and how the run ended: the report's headline when a pair passed the
bar, the one-line miss otherwise.

    .venv/bin/python benchmarks/bench_user_videos.py                      # both kinds, 2,400 clips each
    .venv/bin/python benchmarks/bench_user_videos.py --kinds shapes --folder data/shapes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_videos():
    spec = importlib.util.spec_from_file_location("make_videos", ROOT / "examples/video_entity_tagging/make_videos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fan_out_times(tasks: list[dict], step: str = "train") -> tuple[float, float]:
    """(wall time from the first branch's start to the last one's end, sum of branch times)."""
    branches = [t for t in tasks if t["step"] == step and t["started"] and t["ended"]]
    if not branches:
        return 0.0, 0.0
    wall = max(t["ended"] for t in branches) - min(t["started"] for t in branches)
    return wall, sum(t["ended"] - t["started"] for t in branches)


def run_folder(folder: Path, home: Path, extra: list[str]) -> dict:
    from fanflow.project import Project

    load = os.getloadavg()
    start = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "fanflow.cli.main", "run", "video-entity-tagging", "-p",
                              f"videos={folder}", "--home", str(home), *extra], capture_output=True, text=True)
    wall = time.perf_counter() - start
    project = Project(home)
    try:
        run = project.store.list_runs(1)[0]
        tasks = project.store.tasks(run.id)
    finally:
        project.close()
    by_step = {t["step"]: t for t in tasks}
    selection = (by_step.get("select") or {}).get("output") or {}
    report = (by_step.get("aggregate") or {}).get("output") or {}
    ingest = (by_step.get("ingest") or {}).get("output") or {}
    fan_wall, fan_sum = fan_out_times(tasks)
    return {"folder": str(folder), "run": run.id, "state": run.state, "error": run.error, "wall_seconds": wall,
            "load_before": load, "load_after": os.getloadavg(), "exit_code": process.returncode,
            "data": ingest.get("report", {}), "board": selection.get("board", []), "bar": selection.get("bar"),
            "message": selection.get("message"), "summary": report.get("summary"),
            "fan_out_wall_seconds": fan_wall, "sum_of_branch_seconds": fan_sum}


def show(result: dict) -> None:
    data = result["data"]
    print(f"\n{result['folder']}: run {result['run']} {result['state']} in {result['wall_seconds']:.0f} s "
          f"(load average {result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after)")
    print(f"  clips {data.get('clips')}, {data.get('frames')} frames of {data.get('size')} ({data.get('format_from')}), "
          f"{data.get('tags')} entities, {data.get('skipped', 0)} skipped")
    if result["bar"]:
        bar = result["bar"]
        print(f"  bar: jaccard ≥ {bar['effective']:.3f} (empty predictor {bar['trivial']['empty']:.3f}, "
              f"all tags {bar['trivial']['all_tags']:.3f})")
    print(f"  {'model':18s} {'val J':>6s} {'test J':>6s} {'val tags/clip':>13s} {'epochs':>7s} {'train s':>8s}  status")
    for row in result["board"]:
        status = f"selected ({row['member_rank']})" if row["selected"] else (row["why_not"] or "")
        print(f"  {row['name']:18s} {row['val']['jaccard']:6.3f} {row['test']['jaccard']:6.3f} "
              f"{row['val']['tags_per_clip']:13.2f} {row['best_round']:>3d}/{row['rounds']:<3d} "
              f"{row['train_seconds']:8.0f}  {status[:70]}")
    print(f"  training fan-out: wall {result['fan_out_wall_seconds']:.0f} s, sum of branches "
          f"{result['sum_of_branch_seconds']:.0f} s")
    if result["summary"]:
        print(f"  {result['summary']['verdict']}")
    else:
        print(f"  {result['error']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["shapes", "sky"])
    parser.add_argument("--clips", type=int, default=2400)
    parser.add_argument("--folder", action="append", default=[], help="use this folder (one per kind)")
    parser.add_argument("--work", default=None, help="where to write the videos and the runs (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args, extra = parser.parse_known_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="fanflow-user-videos-"))
    results = []
    for i, kind in enumerate(args.kinds):
        if i < len(args.folder):
            folder = Path(args.folder[i])
        else:
            start = time.perf_counter()
            folder = _make_videos().make_folder(kind, work / kind, args.clips, seed=i)
            print(f"{args.clips} {kind} videos written to {folder} in {time.perf_counter() - start:.0f} s")
        result = run_folder(folder, work / f"home-{kind}", extra)
        show(result)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
