"""Combining the tags of several models, offline, exactly as the ensemble gateway does.

Every model of the zoo emits a tag where its score reaches 0.5 (``thresholds``), so a
member's decisions are ``scores >= 0.5`` and, for a clip and an entity:

| strategy | the ensemble emits the tag when |
|---|---|
| union | at least one member emits it |
| majority | more than half of the members emit it (for two: both) |
| intersection | every member emits it |
| mean | the members' mean score reaches the ensemble's threshold |

These are the gateway's strategies of the same names (``fanflow.serving.strategies``); a
test holds the two to the same answers, and the aggregation step checks the served tags
against these on every clip.
"""

from __future__ import annotations

import numpy as np

from fanflow.ml.errors import ParameterError
from fanflow.ml.thresholds import GRID, jaccard_per_clip

STRATEGIES = ("union", "mean", "majority", "intersection")
MEMBER_DECISION = 0.5


def emit(member_scores: list, strategy: str, threshold: float = MEMBER_DECISION) -> np.ndarray:
    """The ensemble's tags (n, K) of bool from its members' scores (each (n, K))."""
    if strategy not in STRATEGIES:
        raise ParameterError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if not member_scores:
        raise ParameterError("an ensemble needs at least one member")
    stack = np.stack([np.asarray(s, dtype=np.float32) for s in member_scores])
    if strategy == "mean":
        return stack.mean(axis=0) >= np.float32(threshold)
    found = stack >= MEMBER_DECISION
    if strategy == "union":
        return found.any(axis=0)
    if strategy == "intersection":
        return found.all(axis=0)
    return 2 * found.sum(axis=0) > len(stack)


def tune_mean_threshold(y, member_scores: list) -> tuple[float, float]:
    """(threshold, Jaccard) of the mean score that does best on ``y``; ties go to the
    threshold nearest 0.5, the members' own decision point."""
    y = np.asarray(y).astype(bool)
    mean = np.stack([np.asarray(s, dtype=np.float32) for s in member_scores]).mean(axis=0)
    grid = GRID.astype(np.float32)
    per_t = jaccard_per_clip(y[None], mean[None] >= grid[:, None, None]).mean(axis=1)
    best = int(np.argmax(per_t - 1e-9 * np.abs(grid - 0.5)))
    return float(grid[best]), float(per_t[best])


def fit_strategy(y, member_scores: list, strategy: str) -> dict:
    """The strategy's threshold (tuned for mean, 0.5 otherwise) and its Jaccard on ``y``."""
    if strategy == "mean":
        threshold, score = tune_mean_threshold(y, member_scores)
    else:
        threshold = MEMBER_DECISION
        score = float(jaccard_per_clip(np.asarray(y).astype(bool), emit(member_scores, strategy)).mean())
    return {"strategy": strategy, "threshold": threshold, "jaccard": score}


def count_threshold(scores: np.ndarray, count: int) -> float:
    """The threshold at which ``scores`` emit ``count`` tags (at least, and with ties exactly)."""
    flat = np.sort(np.asarray(scores, dtype=np.float32).ravel())[::-1]
    if count <= 0:
        return float(np.nextafter(flat[0], np.float32(np.inf))) if len(flat) else 1.0
    return float(flat[min(count, len(flat)) - 1])
