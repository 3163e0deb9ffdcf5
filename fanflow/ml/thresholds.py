"""Decision thresholds tuned on validation, and the scores that carry them.

A model's probabilities are turned into tags by thresholds chosen on the validation clips to
maximise the example-based accuracy (Jaccard): one threshold for all entities of the model
and, when asked (``per_entity``), then each entity's own, one at a time, kept only where it
gains at least half a clip and the entity shows in enough validation clips to trust it.

Per-entity thresholds fit the validation clips closely; on the moving digits, whose
validation and test clips show different handwriting, they raised validation Jaccard by
0.4 to 1.0 points and lowered test Jaccard by up to 0.7 against one threshold per model
(docs/ml.md), so the zoo's default is one per model.

The thresholds are folded into the scores a model gives out (its ``predict_proba``): each
entity's probability is shifted in log-odds so that its threshold lands on 0.5. So every
model of the zoo, served or not, emits a tag when its score reaches 0.5, and scores of
different models are comparable at their decision points, which is what a mean-score
ensemble averages.
"""

from __future__ import annotations

import numpy as np

# Candidate thresholds: evenly spaced in log-odds from 0.018 to 0.982.
GRID = 1.0 / (1.0 + np.exp(-np.linspace(-4.0, 4.0, 41)))
MIN_SUPPORT = 10  # validation clips showing an entity before it gets a threshold of its own
_EPS = 1e-7


def jaccard_per_clip(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """|pred ∩ true| / |pred ∪ true| of every clip (1 when both are empty); works on a
    leading batch axis too: (..., n, K) → (..., n)."""
    inter = (y & pred).sum(-1)
    union = (y | pred).sum(-1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def align(proba: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Scores (n, K) whose entity k reaches 0.5 exactly when ``proba[:, k] >= thresholds[k]``."""
    z = _logit(proba) - _logit(thresholds)[None, :]
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def tune(y, proba, per_entity: bool = True, min_support: int = MIN_SUPPORT) -> dict:
    """Thresholds for ``proba`` (n, K) that maximise the Jaccard accuracy against ``y``
    (n, K of 0 / 1): one for all entities, refined per entity when ``per_entity``. Returns
    ``{"global": t, "per_entity": [t_k ...], "jaccard": score}``."""
    y = np.asarray(y).astype(bool)
    proba = np.asarray(proba, dtype=np.float64)
    n, k = y.shape
    if n == 0:
        return {"global": 0.5, "per_entity": [0.5] * k, "jaccard": 0.0}
    grid = GRID
    # one threshold for every entity
    scores = jaccard_per_clip(y[None], proba[None] >= grid[:, None, None]).mean(axis=1)
    best = int(np.argmax(scores + 1e-12 * -np.abs(grid - 0.5)))  # ties: nearest to 0.5
    global_t = float(grid[best])
    thresholds = np.full(k, global_t)
    current = float(scores[best])
    min_gain = 0.5 / n
    support = y.sum(axis=0)
    for _ in range(2 if per_entity else 0):
        changed = False
        for j in np.flatnonzero(support >= min_support):
            pred = proba >= thresholds
            others = np.delete(np.arange(k), j)
            inter = (y[:, others] & pred[:, others]).sum(1)
            union = (y[:, others] | pred[:, others]).sum(1)
            col = proba[:, j][None, :] >= grid[:, None]  # (G, n)
            yj = y[:, j][None, :]
            i2, u2 = inter + (yj & col), union + (yj | col)
            per_t = np.where(u2 == 0, 1.0, i2 / np.maximum(u2, 1)).mean(axis=1)
            g = int(np.argmax(per_t))
            if per_t[g] >= current + min_gain:
                thresholds[j], current, changed = grid[g], float(per_t[g]), True
        if not changed:
            break
    return {"global": global_t, "per_entity": [float(t) for t in thresholds], "jaccard": current}
