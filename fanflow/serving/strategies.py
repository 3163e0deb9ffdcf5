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
        vocabulary = list(dict.fromkeys(tag for _, batch in answers for tag in batch.vocabulary))
        column = {tag: j for j, tag in enumerate(vocabulary)}

        m, v = len(answers), len(vocabulary)
        scores = np.full((m, n, v), np.nan, dtype=np.float32)  # NaN: the member has no such tag
        found = np.zeros((m, n, v), dtype=bool)
        for k, (_, batch) in enumerate(answers):
            scores[k][:, [column[t] for t in batch.vocabulary]] = batch.scores
            for i, clip_tags in enumerate(batch.tags):
                found[k, i, [column[t] for t in clip_tags]] = True
        known = ~np.isnan(scores)
        per_member = [self.weights.get(name, 1.0) if self.name == "weighted" else 1.0 for name in names]
        weights = np.array(per_member, dtype=np.float32)[:, None, None] * known
        mean = (np.where(known, scores, 0.0) * weights).sum(0) / weights.sum(0)

        if self.name == "union":
            emit, combined = found.any(0), np.where(known, scores, -np.inf).max(0)
        elif self.name == "intersection":
            emit, combined = found.all(0), np.where(known, scores, np.inf).min(0)
        elif self.name == "majority":
            emit, combined = 2 * found.sum(0) > m, mean
        else:  # mean, weighted
            emit, combined = mean >= self.threshold, mean

        tags, provenance = [], []
        for i in range(n):
            clip_tags, clip_provenance = [], []
            for j in np.flatnonzero(emit[i]):
                clip_tags.append(vocabulary[j])
                clip_provenance.append(
                    {
                        "tag": vocabulary[j],
                        "score": round(float(combined[i, j]), 6),
                        "found_by": [names[k] for k in range(m) if found[k, i, j]],
                        "scores": {
                            names[k]: round(float(scores[k, i, j]), 6) for k in range(m) if known[k, i, j]
                        },
                    }
                )
            tags.append(clip_tags)
            provenance.append(clip_provenance)
        threshold = self.threshold if self.name in THRESHOLD_STRATEGIES else None
        return TagBatch(tags, vocabulary, combined.astype(np.float32), threshold, provenance)
