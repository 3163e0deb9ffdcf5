"""Multi-label metrics for entity tags.

``y_true`` and ``y_pred`` are (n, K) arrays of 0 / 1 (clip i shows entity k). The bar that
a model must reach to be kept is :data:`BAR_METRIC`, the example-based accuracy (the mean
over clips of |predicted ∩ true| / |predicted ∪ true|, called Jaccard or "samples" accuracy):
a model that predicts nothing scores 0 on clips that show something, so unlike Hamming
accuracy (about 0.8 for the empty predictor on the moving digits) it cannot be passed by
saying nothing, and unlike exact-match accuracy one wrong tag in a three-digit clip costs a
third of that clip, not all of it.
"""

from __future__ import annotations

import numpy as np

BAR_METRIC = "jaccard"

METRICS = {
    "jaccard": "example-based accuracy: mean over clips of |pred ∩ true| / |pred ∪ true| (1 when both are empty)",
    "subset_accuracy": "fraction of clips whose predicted tag set is exactly right",
    "hamming_accuracy": "fraction of (clip, entity) decisions that are right",
    "micro_precision": "right tags / emitted tags, pooled over all clips and entities",
    "micro_recall": "found entities / present entities, pooled",
    "micro_f1": "harmonic mean of micro precision and recall",
    "macro_f1": "mean over entities of each entity's F1 (entities neither present nor predicted are left out)",
    "missed_per_clip": "present entities not tagged, per clip",
    "false_per_clip": "tags emitted for absent entities, per clip",
    "tags_per_clip": "tags emitted per clip",
}

_HIGHER_IS_BETTER = {name: not name.endswith("_per_clip") for name in METRICS}


def higher_is_better(metric: str) -> bool:
    return _HIGHER_IS_BETTER.get(metric, True)


def _binary(y) -> np.ndarray:
    return np.asarray(y).astype(bool)


def jaccard(y_true, y_pred) -> float:
    """Example-based (Jaccard) accuracy; a clip with no true and no predicted tag counts 1."""
    t, p = _binary(y_true), _binary(y_pred)
    inter = (t & p).sum(axis=1)
    union = (t | p).sum(axis=1)
    per_clip = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(per_clip.mean()) if len(per_clip) else 0.0


def log_loss(y_true, proba, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy over every (clip, entity) pair: the threshold-free signal
    that early stopping watches."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(proba, dtype=np.float64), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def subset_accuracy(y_true, y_pred) -> float:
    t, p = _binary(y_true), _binary(y_pred)
    return float((t == p).all(axis=1).mean())


def hamming_accuracy(y_true, y_pred) -> float:
    t, p = _binary(y_true), _binary(y_pred)
    return float((t == p).mean())


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def per_entity(y_true, y_pred, tags: list[str]) -> dict[str, dict]:
    """Precision, recall and F1 of each entity, with its support (clips that show it) and how
    often it was tagged. An undefined ratio (nothing predicted, nothing present) is None."""
    t, p = _binary(y_true), _binary(y_pred)
    tp = (t & p).sum(axis=0)
    support, predicted = t.sum(axis=0), p.sum(axis=0)
    out = {}
    for k, tag in enumerate(tags):
        precision = _ratio(tp[k], predicted[k])
        recall = _ratio(tp[k], support[k])
        if precision is None and support[k]:
            precision = 0.0
        out[str(tag)] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall) if support[k] else (0.0 if predicted[k] else None),
            "support": int(support[k]),
            "predicted": int(predicted[k]),
        }
    return out


def evaluate(y_true, scores, threshold: float = 0.5, tags: list[str] | None = None) -> dict:
    """All metrics of scores (n, K) against y_true at ``threshold`` (tag k emitted when its
    score is at least the threshold). Pass 0/1 predictions with the default threshold."""
    t = _binary(y_true)
    p = np.asarray(scores) >= threshold
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but the scores have shape {p.shape}")
    tags = [str(k) for k in range(t.shape[1])] if tags is None else list(tags)
    n = max(len(t), 1)
    tp, present, emitted = (t & p).sum(), t.sum(), p.sum()
    precision = float(tp / emitted) if emitted else 0.0
    recall = float(tp / present) if present else 0.0
    entities = per_entity(t, p, tags)
    f1s = [e["f1"] for e in entities.values() if e["f1"] is not None]
    return {
        "jaccard": jaccard(t, p),
        "subset_accuracy": subset_accuracy(t, p),
        "hamming_accuracy": hamming_accuracy(t, p),
        "micro_precision": precision,
        "micro_recall": recall,
        "micro_f1": _f1(precision, recall) or 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "missed_per_clip": float((t & ~p).sum() / n),
        "false_per_clip": float((~t & p).sum() / n),
        "tags_per_clip": float(emitted / n),
        "entities_per_clip": float(present / n),
        "clips": len(t),
        "threshold": float(threshold),
        "per_entity": entities,
    }
