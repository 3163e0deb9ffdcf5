"""How the ensemble combines its members' answers for a batch of clips.

Each member answers, per clip, the tags it emitted (by its own threshold) and a score for
every tag of its vocabulary. The ensemble's vocabulary is the union of the members'
(in member order). For each clip and tag, over the members that answered:

| strategy     | the tag is emitted when                          | its score is                 |
|--------------|--------------------------------------------------|------------------------------|
| union        | at least one member emitted it (the default)     | the highest member score     |
| intersection | every member emitted it                          | the lowest member score      |
| majority     | more than half of the members emitted it         | the mean member score        |
| mean         | the mean member score ≥ threshold                | the mean member score        |
| weighted     | the weighted mean member score ≥ threshold       | the weighted mean score      |

Means are taken over the members whose vocabulary holds the tag. Every emitted tag carries
its provenance: the members that emitted it and every member's score for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fanflow.serving.wire import TagBatch

STRATEGIES = ("union", "intersection", "majority", "mean", "weighted")
THRESHOLD_STRATEGIES = ("mean", "weighted")


@dataclass(frozen=True)
class Strategy:
    name: str = "union"
    threshold: float = 0.5  # for mean and weighted
    weights: dict[str, float] = field(default_factory=dict)  # for weighted; a missing member weighs 1

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}; expected one of {list(STRATEGIES)}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold!r}")
        for member, weight in self.weights.items():
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
                raise ValueError(f"weight of {member!r} must be a positive number, got {weight!r}")

    def describe(self) -> dict:
        """The strategy as V2 parameters (scalars only)."""
        out: dict = {"strategy": self.name}
        if self.name in THRESHOLD_STRATEGIES:
            out["threshold"] = self.threshold
        return out

    def combine(self, answers: list[tuple[str, TagBatch]]) -> TagBatch:
        """Combine the answers of the members that answered (``(member, batch)``, in member
        order) into one batch with provenance."""
        if not answers:
            raise ValueError("no answers to combine")
        names = [name for name, _ in answers]
        n = len(answers[0][1])
        if any(len(batch) != n for _, batch in answers):
            raise ValueError(
                f"members answered for different numbers of clips: {[len(b) for _, b in answers]}"
            )
        vocabularies = [batch.vocabulary for _, batch in answers]
        vocabulary = list(dict.fromkeys(tag for v in vocabularies for tag in v))
        column = {tag: j for j, tag in enumerate(vocabulary)}
        m, v = len(answers), len(vocabulary)
        if all(list(voc) == vocabulary for voc in vocabularies):  # the usual case: one column order
            scores = np.stack([np.asarray(batch.scores, dtype=np.float32) for _, batch in answers])
            known = None  # every member has every tag
        else:
            scores = np.full((m, n, v), np.nan, dtype=np.float32)  # NaN: the member has no such tag
            for k, (_, batch) in enumerate(answers):
                scores[k][:, [column[t] for t in batch.vocabulary]] = batch.scores
            known = ~np.isnan(scores)
        found = np.zeros(m * n * v, dtype=bool)
        found[
            [
                (k * n + i) * v + column[t]
                for k, (_, batch) in enumerate(answers)
                for i, clip_tags in enumerate(batch.tags)
                for t in clip_tags
            ]
        ] = True
        found = found.reshape(m, n, v)

        if self.name == "union":
            emit = found.any(0)
            combined = scores.max(0) if known is None else np.where(known, scores, -np.inf).max(0)
        elif self.name == "intersection":
            emit = found.all(0)
            combined = scores.min(0) if known is None else np.where(known, scores, np.inf).min(0)
        else:
            per_member = [self.weights.get(name, 1.0) if self.name == "weighted" else 1.0 for name in names]
            weights = np.array(per_member, dtype=np.float32)[:, None, None]
            if known is None:
                mean = (scores * weights).sum(0) / weights.sum(0)
            else:
                weights = weights * known
                mean = (np.where(known, scores, 0.0) * weights).sum(0) / weights.sum(0)
            combined = mean
            emit = 2 * found.sum(0) > m if self.name == "majority" else mean >= self.threshold

        # Provenance is built from Python lists: indexing numpy scalars one by one costs more.
        # Scores are float32, so x * 1e6 is exact in float64 and numpy's rounding (times 1e6,
        # to the nearest even integer, divided by 1e6) is Python's round(x, 6), for all at once.
        score_rows, combined_rows = _rounded(scores), _rounded(combined)
        found_rows = found.tolist()
        known_rows = None if known is None else known.tolist()
        tags, provenance = [], []
        for i, row in enumerate(emit.tolist()):
            clip_scores = [member_rows[i] for member_rows in score_rows]
            clip_found = [member_rows[i] for member_rows in found_rows]
            clip_known = None if known_rows is None else [member_rows[i] for member_rows in known_rows]
            clip_tags, clip_provenance = [], []
            for j, emitted in enumerate(row):
                if not emitted:
                    continue
                members = range(m) if clip_known is None else [k for k in range(m) if clip_known[k][j]]
                clip_tags.append(vocabulary[j])
                clip_provenance.append(
                    {
                        "tag": vocabulary[j],
                        "score": combined_rows[i][j],
                        "found_by": [names[k] for k in range(m) if clip_found[k][j]],
                        "scores": {names[k]: clip_scores[k][j] for k in members},
                    }
                )
            tags.append(clip_tags)
            provenance.append(clip_provenance)
        threshold = self.threshold if self.name in THRESHOLD_STRATEGIES else None
        return TagBatch(tags, vocabulary, combined.astype(np.float32), threshold, provenance)


def _rounded(array: np.ndarray) -> list:
    return np.round(array.astype(np.float64), 6).tolist()
