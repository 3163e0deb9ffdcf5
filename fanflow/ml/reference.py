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
    stored, model, seed, scratch = job
    os.environ["FANFLOW_CPUS"] = "1"
    os.environ["FANFLOW_SCRATCH"] = str(scratch)
    from fanflow.ml.train import fit

    start = time.perf_counter()
    result = fit(_load(stored), model, seed=seed)
    result["branch_seconds"] = time.perf_counter() - start
    return result


def run(seed: int = 0, models: list[str] | None = None, workers: int = 2, k: int = 2, at_least: float = 0.90,
        out: str | Path = "out/ml-reference", **source) -> dict:
    import multiprocessing

    from fanflow.ml.report import offline_coverage
    from fanflow.ml.select import top_k
    from fanflow.ml.sources import moving_digits

    models = list(models or REFERENCE_ZOO)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.environ["FANFLOW_SCRATCH"] = str(out / "ingest")
    start = time.perf_counter()
    data = moving_digits(seed=seed, **source)
    ingest_seconds = time.perf_counter() - start
    stored = _store(data, out / "arrays")

    start = time.perf_counter()
    jobs = [(stored, m, seed, out / "branches" / m) for m in models]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        trained = pool.map(_branch, jobs, chunksize=1)
    fan_out_wall = time.perf_counter() - start

    chosen = top_k(trained, k=k, metric="jaccard", at_least=at_least)
    os.environ["FANFLOW_SCRATCH"] = str(out / "report")
    report = offline_coverage(_load(stored), chosen)
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
             "train_seconds": t["train_seconds"], "branch_seconds": t["branch_seconds"]}
            for t in trained
        ],
        "selected": [c["name"] for c in chosen],
        "coverage": report["summary"],
        "report": {k: str(v) for k, v in report.items() if k != "summary"},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _print(summary: dict) -> None:
    print(f"ingest {summary['ingest_seconds']:.1f} s; training fan-out on {summary['workers']} workers: "
          f"wall {summary['fan_out_wall_seconds']:.1f} s, sum of branches {summary['sum_of_branch_seconds']:.1f} s; "
          f"end to end {summary['total_seconds']:.1f} s")
    print(f"{'model':16s} {'val J':>6s} {'test J':>6s} {'F1':>6s} {'subset':>6s} {'missed':>6s} {'false':>6s} "
          f"{'train s':>7s} {'branch s':>8s}")
    for m in summary["models"]:
        print(f"{m['name']:16s} {m['val_jaccard']:6.3f} {m['test_jaccard']:6.3f} {m['test_micro_f1']:6.3f} "
              f"{m['test_subset_accuracy']:6.3f} {m['test_missed_per_clip']:6.3f} {m['test_false_per_clip']:6.3f} "
              f"{m['train_seconds']:7.1f} {m['branch_seconds']:8.1f}")
    c = summary["coverage"]
    print(f"selected: {', '.join(summary['selected'])}")
    print(f"union missed/clip {c['union_missed_per_clip']:.3f} (best member {c['best_member']} "
          f"{c['best_member_missed_per_clip']:.3f}), false/clip {c['union_false_per_clip']:.3f} "
          f"(best member {c['best_member_false_per_clip']:.3f})")
    print(f"baseline {c['baseline_member']} @ {c['baseline_threshold']:.3f}: missed/clip "
          f"{c['baseline_missed_per_clip']:.3f}, false/clip {c['baseline_false_per_clip']:.3f}; "
          f"recall union {c['union_recall']:.4f} vs baseline {c['baseline_recall']:.4f} "
          f"({100 * c['recall_gain_over_baseline']:+.2f} points) at {c['tags_per_clip']:.3f} tags/clip")
    print(f"report: {summary['report']['html']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=REFERENCE_ZOO)
    parser.add_argument("--out", default="out/ml-reference")
    args = parser.parse_args(argv)
    _print(run(seed=args.seed, models=args.models, workers=args.workers, out=args.out))


if __name__ == "__main__":
    main()
