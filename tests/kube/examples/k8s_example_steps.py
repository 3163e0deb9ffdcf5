"""Step functions of the exporters' test workflows: small, fast, no machine learning."""

from __future__ import annotations

from pathlib import Path

from fanflow import runtime

QUALITY = {"small": 0.6, "medium": 0.8, "large": 0.9}


def make_data(n: int) -> dict:
    return {"rows": list(range(n))}


def train(data: dict, model: str) -> dict:
    """A "model" is a small file; the one named 'broken' fails, as a real training run may."""
    if model not in QUALITY:
        raise ValueError(f"cannot train a {model!r} model")
    path = Path(runtime.scratch_dir()) / f"{model}.txt"
    path.write_text(f"{model} trained on {len(data['rows'])} rows\n", encoding="utf-8")
    return {"name": model, "model": path, "accuracy": QUALITY[model]}


def select(candidates: list[dict], k: int, at_least: float) -> list[dict]:
    """The ``k`` most accurate candidates that reach ``at_least``, best first."""
    good = [c for c in candidates if c["accuracy"] >= at_least]
    return sorted(good, key=lambda c: -c["accuracy"])[:k]
