"""The ML half of the reference workload, run without the engine: ingest once, train the zoo
in a pool of worker processes (one core each, reading the same memory-mapped arrays), keep
the top two, and write the coverage report. It measures what the workflow will do and lets
anyone reproduce the figures in docs/ml.md::

    python -m fanflow.ml.reference --seed 0 --workers 2 --out out/ml-reference
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from fanflow.ml.models import REFERENCE_ZOO


def _store(data: dict, folder: Path) -> dict:
    """Write the arrays once and hand back read-only memory maps, as the artifact store does."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {k: v for k, v in data.items() if k not in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        out[split] = {}
        for key, value in data[split].items():
            if isinstance(value, np.ndarray):
                np.save(folder / f"{split}-{key}.npy", value)
                out[split][key] = folder / f"{split}-{key}.npy"
            else:
                out[split][key] = value
    return out


def _load(stored: dict) -> dict:
    data = dict(stored)
    for split in ("train", "val", "test"):
        data[split] = {k: np.load(v, mmap_mode="r") if isinstance(v, Path) else v for k, v in stored[split].items()}
    return data


def _branch(job: tuple) -> dict:
    stored, model, seed, training, scratch = job
    os.environ["FANFLOW_CPUS"] = "1"
    os.environ["FANFLOW_SCRATCH"] = str(scratch)
    from fanflow.ml.train import fit

    start = time.perf_counter()
    result = fit(_load(stored), model, seed=seed, training=training)
    result["branch_seconds"] = time.perf_counter() - start
    return result


def run(seed: int = 0, models: list[str] | None = None, workers: int = 2, k: int = 2, at_least: float = 0.90,
        policy: str = "ensemble", strategy: str = "auto", training: dict | None = None,
        out: str | Path = "out/ml-reference", **source) -> dict:
    """Ingest (the moving digits, or ``videos=DIR``), train ``models`` on ``workers`` processes,
    select on validation and write the report on test; returns (and writes) ``summary.json``."""
    import multiprocessing

    from fanflow.ml.report import offline_report
    from fanflow.ml.select import choose
    from fanflow.ml.sources import clips

    models = list(models or REFERENCE_ZOO)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.environ["FANFLOW_SCRATCH"] = str(out / "ingest")
    start = time.perf_counter()
    data = clips(seed=seed, **source)
    ingest_seconds = time.perf_counter() - start
    stored = _store(data, out / "arrays")

    start = time.perf_counter()
    jobs = [(stored, m, seed, training, out / "branches" / m) for m in models]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        trained = pool.map(_branch, jobs, chunksize=1)
    fan_out_wall = time.perf_counter() - start

    os.environ["FANFLOW_SCRATCH"] = str(out / "select")
    data = _load(stored)
    selection = choose(trained, data, k=k, at_least=at_least, policy=policy, strategy=strategy,
                       run={"seed": seed, "models": models, "k": k, "min_accuracy": at_least, "policy": policy,
                            "strategy": strategy, **(training or {}), **source})
    report = None
    if selection["passed"]:
        os.environ["FANFLOW_SCRATCH"] = str(out)
        report = offline_report(data, selection)
    total = time.perf_counter() - start + ingest_seconds

    summary = {
        "seed": seed,
        "workers": workers,
        "ingest_seconds": ingest_seconds,
        "fan_out_wall_seconds": fan_out_wall,
        "sum_of_branch_seconds": sum(t["branch_seconds"] for t in trained),
        "total_seconds": total,
        "models": [
            {"name": t["name"], "val_jaccard": t["metrics"]["val"]["jaccard"],
             **{f"test_{m}": t["metrics"]["test"][m] for m in ("jaccard", "micro_f1", "subset_accuracy",
                                                              "missed_per_clip", "false_per_clip")},
             "rounds": t["rounds"], "best_round": t["best_round"],
             "train_seconds": t["train_seconds"], "branch_seconds": t["branch_seconds"]}
            for t in trained
        ],
        "selection": {"passed": selection["passed"], "message": selection["message"],
                      "members": [c["name"] for c in selection["models"]],
                      "aggregation": None if not selection["passed"] else
                      {k_: selection["aggregation"][k_] for k_ in ("strategy", "threshold", "jaccard")},
                      "baseline": selection["baseline"], "bar": selection["bar"],
                      "leaderboard": {k_: str(v) for k_, v in selection["leaderboard"].items()}},
        "report": None if report is None else {**{k_: str(v) for k_, v in report.items()
                                                  if k_ not in ("summary", "examples")},
                                               "summary": report["summary"]},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def _print(summary: dict) -> None:
    print(f"ingest {summary['ingest_seconds']:.1f} s; training fan-out on {summary['workers']} workers: "
          f"wall {summary['fan_out_wall_seconds']:.1f} s, sum of branches {summary['sum_of_branch_seconds']:.1f} s; "
          f"end to end {summary['total_seconds']:.1f} s")
    print(f"{'model':16s} {'val J':>6s} {'test J':>6s} {'F1':>6s} {'subset':>6s} {'missed':>6s} {'false':>6s} "
          f"{'epochs':>6s} {'train s':>7s} {'branch s':>8s}")
    for m in summary["models"]:
        print(f"{m['name']:16s} {m['val_jaccard']:6.3f} {m['test_jaccard']:6.3f} {m['test_micro_f1']:6.3f} "
              f"{m['test_subset_accuracy']:6.3f} {m['test_missed_per_clip']:6.3f} {m['test_false_per_clip']:6.3f} "
              f"{m['best_round']:>3d}/{m['rounds']:<2d} {m['train_seconds']:7.1f} {m['branch_seconds']:8.1f}")
    print(summary["selection"]["message"])
    report = summary["report"]
    if report is None:
        print(f"leaderboard: {summary['selection']['leaderboard']['html']}")
        return
    s = report["summary"]
    print(f"{'':44s} {'recall':>7s} {'missed':>7s} {'false':>7s} {'tags':>7s}")
    for name, st in ((f"served {s['strategy']}", s["served"]),
                     (f"baseline {s['baseline_member']} @ {s['baseline_threshold']:.3f}", s["baseline"])):
        print(f"{name:44s} {st['recall']:7.4f} {st['missed_per_clip']:7.3f} {st['false_per_clip']:7.3f} "
              f"{st['tags_per_clip']:7.3f}")
    print(s["verdict"])
    print(f"report: {report['html']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=REFERENCE_ZOO)
    parser.add_argument("--policy", default="ensemble")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--videos", default=None, help="a folder of videos with a labels CSV (default: the digits)")
    parser.add_argument("--out", default="out/ml-reference")
    args = parser.parse_args(argv)
    source = {"videos": args.videos} if args.videos else {}
    _print(run(seed=args.seed, models=args.models, workers=args.workers, policy=args.policy,
               strategy=args.strategy, out=args.out, **source))


if __name__ == "__main__":
    main()
