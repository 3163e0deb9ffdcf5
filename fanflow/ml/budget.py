"""How long a model trains: a budget of optimiser steps scaled to the data, early stopping
on a threshold-free signal, and the progress a training task shows: a line per epoch (with an
ETA) on stdout, and ``fanflow.progress`` (epoch of max, train loss, validation score and loss)
for the live view and the run store.

The budget is ``epochs`` passes over the training clips, raised to at least ``min_steps``
optimiser steps (a small data set needs more passes to learn anything) and capped at
``max_steps`` (a large one needs fewer), in whole epochs (at least one). Training stops early when
the validation loss has not improved for ``patience`` epochs, but never during the warm-up
of the learning rate nor in the ``min_epochs`` after it: a loss that has not started to
fall yet is no reason to stop.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

from fanflow.ml.errors import ParameterError
from fanflow.reporting import progress as report_progress

# Improvements of the validation loss smaller than this (relative) do not count as progress.
MIN_RELATIVE_IMPROVEMENT = 1e-3


@dataclass(frozen=True)
class Plan:
    steps_per_epoch: int
    epochs: int
    steps: int
    warmup_epochs: int
    earliest_stop: int = 0  # the first epoch after which early stopping may stop

    def describe(self) -> str:
        return (f"{self.steps} optimiser steps = {self.epochs} epoch(s) of {self.steps_per_epoch} "
                f"(warm-up {self.warmup_epochs}, no early stop before epoch {self.earliest_stop})")


def check_budget(epochs, min_steps, max_steps, patience, min_epochs) -> None:
    for name, value, low in (("epochs", epochs, 1), ("min_steps", min_steps, 0), ("max_steps", max_steps, 1),
                             ("patience", patience, 1), ("min_epochs", 0 if min_epochs is None else min_epochs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParameterError(f"{name}: expected an integer >= {low}, got {value!r}")
    if min_steps > max_steps:
        raise ParameterError(f"min_steps ({min_steps}) is above max_steps ({max_steps})")


def plan(n_clips: int, batch_size: int, epochs: int, min_steps: int, max_steps: int,
         warmup: float = 0.0, min_epochs: int | None = None) -> Plan:
    """The budget for ``n_clips`` training clips in batches of ``batch_size``; ``min_epochs``
    None is a quarter of it."""
    per_epoch = max(1, math.ceil(n_clips / batch_size))
    steps = min(max(epochs * per_epoch, min_steps), max_steps)
    # whole epochs: enough to reach the steps wanted, never more than the cap allows
    n_epochs = max(1, min(math.ceil(steps / per_epoch), max_steps // per_epoch))
    warmup_epochs = math.ceil(warmup * n_epochs)
    after = math.ceil(n_epochs / 4) if min_epochs is None else min_epochs
    return Plan(per_epoch, n_epochs, n_epochs * per_epoch, warmup_epochs, warmup_epochs + after)


class EarlyStopping:
    """Tracks the validation loss epoch by epoch; says when the best so far was just seen
    and when to stop."""

    def __init__(self, patience: int, earliest_stop: int = 0):
        self.patience = patience
        self.earliest_stop = earliest_stop
        self.best = math.inf
        self.best_epoch = 0
        self.stale = 0

    def update(self, epoch: int, loss: float) -> tuple[bool, bool]:
        """(improved, stop) after ``epoch`` ended with validation ``loss``."""
        improved = loss < self.best - MIN_RELATIVE_IMPROVEMENT * abs(self.best) if math.isfinite(self.best) \
            else math.isfinite(loss)
        if improved:
            self.best, self.best_epoch, self.stale = loss, epoch, 0
        else:
            self.stale += 1
        return improved, self.stale >= self.patience and epoch >= self.earliest_stop


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """One line per epoch on stdout (what a task's log shows): losses and time left, when
    ``enabled``; and, always, the epoch's figures reported with ``fanflow.progress``: ``val``
    (the validation score, Jaccard at a 0.5 threshold), ``loss`` (train) and ``val_loss``."""

    def __init__(self, name: str, rounds: int, budget: str, unit: str = "epoch", enabled: bool = True):
        self.name, self.rounds, self.unit, self.enabled = name, rounds, unit, enabled
        self.start = time.perf_counter()
        if enabled:
            self._print(f"budget {budget}")

    def round(self, done: int, val_loss: float, improved: bool, train_loss: float | None = None,
              val_score: float | None = None) -> None:
        metrics = {"val": val_score, "loss": train_loss, "val_loss": val_loss}
        report_progress(done, self.rounds, unit=self.unit + "s",
                        **{name: value for name, value in metrics.items() if value is not None})
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / done * (self.rounds - done)
        train = "" if train_loss is None else f"train loss {train_loss:.4f}, "
        mark = " *" if improved else ""
        self._print(f"{self.unit} {done}/{self.rounds}: {train}val loss {val_loss:.4f}{mark}; "
                    f"{duration(elapsed)} elapsed, ETA {duration(left)} at most")

    def stopped(self, done: int, best: int) -> None:
        if self.enabled:
            self._print(f"stopped after {self.unit} {done} (validation loss flat); keeping {self.unit} {best}")

    def _print(self, text: str) -> None:
        print(f"{self.name}: {text}", file=sys.stdout, flush=True)
