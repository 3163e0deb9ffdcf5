"""Paired comparisons of two taggers on the same clips, with bootstrap intervals.

Each comparison resamples the clips with replacement (``resamples`` times, from a fixed
seed, so the interval is the same in every run) and recomputes the difference on every
resample; the 95 % interval is the 2.5th to 97.5th percentile. A difference whose interval
includes 0 is "not significantly different".
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def per_clip(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Counts per clip: found (true tags emitted), present, missed, false, emitted, and the
    clip's Jaccard."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    inter, union = (y & pred).sum(1), (y | pred).sum(1)
    return {
        "found": inter,
        "present": y.sum(1),
        "missed": (y & ~pred).sum(1),
        "false": (~y & pred).sum(1),
        "emitted": pred.sum(1),
        "jaccard": np.where(union == 0, 1.0, inter / np.maximum(union, 1)),
    }


def _differences(a: dict, b: dict, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each headline difference (a − b) under clip weights (R, n) (counts of each clip)."""
    n = weights.sum(axis=1).astype(np.float64)
    present = weights @ a["present"]

    def total(counts):
        return weights @ counts.astype(np.float64)

    return {
        "recall": (total(a["found"]) - total(b["found"])) / np.maximum(present, 1),
        "missed_per_clip": (total(a["missed"]) - total(b["missed"])) / n,
        "false_per_clip": (total(a["false"]) - total(b["false"])) / n,
        "tags_per_clip": (total(a["emitted"]) - total(b["emitted"])) / n,
        "jaccard": (total(a["jaccard"]) - total(b["jaccard"])) / n,
    }


def compare(y, pred_a, pred_b, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, dict]:
    """For each headline metric, a's value minus b's on these clips, with its bootstrap
    95 % interval and whether the interval excludes 0:
    ``{"recall": {"difference", "low", "high", "significant"}, ...}``."""
    a, b = per_clip(y, pred_a), per_clip(y, pred_b)
    n = len(a["present"])
    observed = _differences(a, b, np.ones((1, n)))
    rng = np.random.default_rng(seed)
    draws = {key: [] for key in observed}
    for start in range(0, resamples, 250):  # in chunks: (250, n) weights at a time
        count = min(250, resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=count).astype(np.float64)
        for key, values in _differences(a, b, weights).items():
            draws[key].append(values)
    tail = 100 * (1 - LEVEL) / 2
    out = {}
    for key, value in observed.items():
        low, high = np.percentile(np.concatenate(draws[key]), [tail, 100 - tail])
        out[key] = {"difference": float(value[0]), "low": float(low), "high": float(high),
                    "significant": bool(low > 0 or high < 0)}
    return out


def verdict(name_a: str, name_b: str, metric: str, d: dict, scale: float = 100.0, unit: str = " points") -> str:
    """One sentence: which is better on ``metric`` and whether the interval says so."""
    text = (f"{metric} {scale * d['difference']:+.2f}{unit} "
            f"(95 % interval {scale * d['low']:+.2f} to {scale * d['high']:+.2f})")
    if not d["significant"]:
        return f"{name_a} and {name_b} are not significantly different in {text}."
    better = d["difference"] > 0
    return f"{name_a} {'beats' if better else 'trails'} {name_b} in {text}."
