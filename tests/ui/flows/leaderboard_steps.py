"""A leaderboard of the reference workflow's trained models in the documented format
(``fanflow.leaderboard/1``, docs/ml.md, "The leaderboard"), made from the real training and
selection outputs, for the UI's tests of a reference-style run."""

import datetime
import json
from pathlib import Path

from fanflow.ml.select import rank
from fanflow.runtime import scratch_dir


def leaderboard(candidates: list[dict], selected: list[dict], metric: str, at_least: float) -> dict:
    chosen = [c["name"] for c in selected]
    rows = []
    for position, (score, c) in enumerate(rank(candidates, metric), start=1):
        passes = score >= at_least
        rows.append({
            "position": position, "name": c["name"], "recipe": c["recipe"], "family": c["family"],
            "val": c["metrics"]["val"], "test": c["metrics"]["test"], "passes_bar": passes,
            "selected": c["name"] in chosen,
            "member_rank": chosen.index(c["name"]) + 1 if c["name"] in chosen else None,
            "why_not": None if c["name"] in chosen else (
                f"below the bar ({score:.3f} < {at_least:.3f})" if not passes else f"rank {position}: {len(chosen)} kept"),
            "train_seconds": c["train_seconds"], "rounds": 1, "best_round": 1,
            "model_sha256": c["model_sha256"], "card": None,
        })
    document = {
        "format": "fanflow.leaderboard/1",
        "run": {"id": None, "date": datetime.datetime.now(datetime.UTC).isoformat(), "params": {}, "data": {}},
        "bar": {"metric": metric, "split": "val", "at_least": at_least, "margin": 0.0,
                "trivial": {"empty": 0.0, "all_tags": 0.0}, "effective": at_least, "raised": False},
        "policy": "top_k", "k": len(chosen), "passed": True,
        "message": f"kept {', '.join(chosen)} (top {len(chosen)} by validation {metric})",
        "models": rows, "ensemble": None, "baseline": None,
    }
    path = Path(scratch_dir()) / "leaderboard.json"
    path.write_text(json.dumps(document, indent=1))
    return {"json": path}
