"""Selection: the fan-in step that keeps the best trained models.

Candidates are ranked on the validation split by default. The test split decides nothing:
it is held back to report how the kept models do on handwriting no choice was made on
(choosing on test would make the reported test score optimistic).
"""

from __future__ import annotations

import math
import warnings

from fanflow.ml.metrics import higher_is_better


class SelectionError(ValueError):
    """Fewer candidates than asked for reach the bar (or none is usable)."""


def _score(candidate: dict, metric: str, split: str) -> float:
    try:
        value = candidate["metrics"][split][metric]
    except (KeyError, TypeError):
        name = candidate.get("name", "?") if isinstance(candidate, dict) else "?"
        raise SelectionError(f"candidate {name!r} has no metric {metric!r} on split {split!r}") from None
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise SelectionError(f"candidate {candidate.get('name', '?')!r}: {split} {metric} is not a number: {value!r}")
    return float(value)


def rank(candidates: list, metric: str, split: str = "val") -> list[tuple[float, dict]]:
    """(score, candidate), best first. Ties go to the candidate with fewer missed entities
    per clip on the same split, then to the alphabetically first name; a candidate that is
    None (a branch that produced nothing) is left out."""
    sign = -1.0 if higher_is_better(metric) else 1.0
    scored = [(_score(c, metric, split), c) for c in candidates if c is not None]
    names = [c.get("name") for _, c in scored]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SelectionError(f"candidate names must be unique; repeated: {duplicates}")

    def key(item):
        score, c = item
        missed = c["metrics"][split].get("missed_per_clip", math.inf)
        return (sign * score, missed, str(c.get("name")))

    return sorted(scored, key=key)


def top_k(candidates: list, k: int = 2, metric: str = "jaccard", at_least: float | None = None,
          allow_fewer: bool = False, split: str = "val") -> list[dict]:
    """The ``k`` best candidates by ``metric`` on ``split``, best first, among those that
    reach ``at_least``. Each returned candidate is the training step's dict with its
    ``rank`` and ``selection`` (metric, split, score, bar) added.

    When fewer than ``k`` reach the bar, raises :class:`SelectionError` listing every
    candidate and its score, unless ``allow_fewer``: then it warns and returns those that
    passed (at least one must).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SelectionError(f"k: expected an integer >= 1, got {k!r}")
    if not isinstance(candidates, list | tuple):
        raise SelectionError(f"candidates: expected a list of training results, got {type(candidates).__name__}")
    ranked = rank(list(candidates), metric, split)
    better = higher_is_better(metric)

    def passes(score: float) -> bool:
        return at_least is None or (score >= at_least if better else score <= at_least)

    passed = [(s, c) for s, c in ranked if passes(s)]
    missing = len(candidates) - len(ranked)
    if len(passed) < k:
        bar = "" if at_least is None else f" {'≥' if better else '≤'} {at_least}"
        table = "\n".join(
            f"  {c.get('name')}: {split} {metric} = {s:.4f}{'' if passes(s) else '  (below the bar)'}"
            for s, c in ranked
        )
        extra = f"\n  ({missing} branch(es) produced no result)" if missing else ""
        message = (f"top_k: {len(passed)} of {len(ranked)} candidate(s) reach {metric}{bar} on {split}, "
                   f"{k} wanted:\n{table}{extra}")
        if not allow_fewer or not passed:
            raise SelectionError(message)
        warnings.warn(message + f"\nkeeping the {len(passed)} that passed (allow_fewer)", stacklevel=2)
    chosen = passed[:k]
    return [
        {**c, "rank": i + 1,
         "selection": {"metric": metric, "split": split, "score": s, "at_least": at_least}}
        for i, (s, c) in enumerate(chosen)
    ]
