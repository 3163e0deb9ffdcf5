"""Quorum arithmetic for a fan-in with ``min_success``: one rule for every backend."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def required(rule: int | float, total: int) -> int:
    """Branches that must succeed: a count as given, a ratio of ``total`` rounded up; at
    least one whenever there are branches at all."""
    need = rule if isinstance(rule, int) else math.ceil(rule * total - 1e-9)
    return max(need, 1) if total else need


@dataclass
class Tally:
    """What a fan-in's branches came to: counts, and each failed branch's error."""

    sources: list[str]
    total: int = 0
    ok: int = 0
    lost: int = 0  # ended without succeeding (failed, skipped, cancelled)
    pending: int = 0  # not ended yet (a verdict said now counts successes so far only)
    failures: list[str] = field(default_factory=list)  # "task: error", in declared order

    def need(self, rule: int | float) -> int:
        return required(rule, self.total)

    def met(self, rule: int | float) -> bool:
        return self.ok >= self.need(rule)

    def reachable(self, rule: int | float) -> bool:
        return self.total - self.lost >= self.need(rule)

    def describe(self, rule: int | float) -> str:
        sources = ", ".join(self.sources)
        if self.pending:
            # Said while branches still run: the count of successes is not final, the losses are.
            detail = (
                f"{self.lost} of {self.total} branches of {sources} did not succeed, so at most "
                f"{self.total - self.lost} can ({self.ok} have so far), {self.need(rule)} needed"
            )
        else:
            detail = f"{self.ok} of {self.total} branches of {sources} succeeded, {self.need(rule)} needed"
        if self.failures:
            detail += "; failed: " + "; ".join(self.failures)
        return detail
