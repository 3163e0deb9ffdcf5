"""Selection: the fan-in step that ranks every trained model, applies the bar, chooses which
models to serve and how to combine them, and writes the leaderboard.

Every decision is made on the validation split. The test split decides nothing: it is held
back to report how the kept models do on clips no choice was made on.

The bar: a model must reach ``at_least`` on the metric, and beat by ``margin`` both trivial
predictors (one that emits nothing, one that emits every tag) scored on the same validation
clips; where a trivial predictor would pass ``at_least`` the bar is raised above it.

Policies: ``top_k`` keeps the k best models by the metric; ``ensemble`` (the default) starts
from the best model and adds, one at a time, the passing model whose combination with those
kept does best on validation (greedy forward ensemble selection), for each aggregation
strategy, and keeps the strategy whose ensemble does best. Models that make different
mistakes are what this finds: a second model that repeats the first's errors adds nothing to
the combination however good it is alone.
"""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fanflow.ml.ensemble import STRATEGIES, count_threshold, emit, fit_strategy
from fanflow.ml.errors import ParameterError
from fanflow.ml.metrics import evaluate, higher_is_better, jaccard
from fanflow.vocab.manifest import SUMMARY_KEY

POLICIES = ("ensemble", "top_k")
AUTO_STRATEGIES = ("mean", "union", "majority")  # tried by strategy="auto", ties in this order


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
    _check_k(k)
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


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SelectionError(f"k: expected an integer >= 1, got {k!r}")


# --------------------------------------------------------------------------- the bar


def trivial_scores(y, metric: str = "jaccard") -> dict[str, float]:
    """The metric of the predictor that emits nothing and of the one that emits every tag."""
    y = np.asarray(y).astype(bool)
    out = {}
    for name, pred in (("empty", np.zeros_like(y)), ("all_tags", np.ones_like(y))):
        out[name] = float(evaluate(y, pred.astype(np.float32), 0.5)[metric])
    return out


def effective_bar(at_least: float, trivial: dict[str, float], margin: float, metric: str) -> float:
    """``at_least``, raised so that a model must beat both trivial predictors by ``margin``."""
    if higher_is_better(metric):
        return max(at_least, max(trivial.values()) + margin)
    return min(at_least, min(trivial.values()) - margin)


# --------------------------------------------------------------------------- ensembles


def greedy_ensemble(y_val, scores: dict[str, np.ndarray], order: list[str], k: int, strategy: str) -> dict:
    """Greedy forward selection: start from ``order[0]`` (the best model alone), then add
    the model whose combination under ``strategy`` does best on ``y_val`` until there are
    ``k``. Returns the members, the strategy's threshold and its validation Jaccard, with
    the score every tried addition would have given (why a model was not chosen)."""
    members = [order[0]]
    tried: dict[str, float] = {}
    fitted = fit_strategy(y_val, [scores[order[0]]], strategy)
    while len(members) < k:
        best, best_fit = None, None
        for name in order:
            if name in members:
                continue
            trial = fit_strategy(y_val, [scores[m] for m in [*members, name]], strategy)
            tried.setdefault(name, trial["jaccard"])
            if best_fit is None or trial["jaccard"] > best_fit["jaccard"] + 1e-12:
                best, best_fit = name, trial
        if best is None:
            break
        members.append(best)
        fitted = best_fit
    return {**fitted, "members": members, "tried": tried}


def _ensemble_choice(y_val, scores, order, k, policy, strategy) -> tuple[dict, list[dict]]:
    strategies = AUTO_STRATEGIES if strategy == "auto" else (strategy,)
    tried = []
    for s in strategies:
        if policy == "ensemble":
            tried.append(greedy_ensemble(y_val, scores, order, k, s))
        else:
            members = order[:k]
            tried.append({**fit_strategy(y_val, [scores[m] for m in members], s), "members": members, "tried": {}})
    best = max(tried, key=lambda t: t["jaccard"])  # first of equals: the order of AUTO_STRATEGIES
    return best, tried


# --------------------------------------------------------------------------- the step


def choose(candidates: list, data: dict, k: int = 2, metric: str = "jaccard", at_least: float = 0.9,
           margin: float = 0.05, policy: str = "ensemble", strategy: str = "auto", allow_fewer: bool = False,
           run: dict | None = None, caveat: str = "") -> dict:
    """The selection step: rank every candidate on validation, apply the bar, choose ``k``
    models by ``policy`` and the aggregation ``strategy`` ("auto": the one that does best
    on validation) with its threshold, and the deployable baseline; write the leaderboard.

    Returns ``{"models": [...selected candidates, best first], "aggregation": {...},
    "baseline": {...}, "bar": {...}, "passed": bool, "message": str, "leaderboard": files,
    "board": [...rows]}``. Never raises because models miss the bar: the leaderboard is
    written either way, and ``require_bar`` (the next step) fails the run with ``message``.
    ``run`` is the run's parameters as the leaderboard and report list them; ``caveat``, a
    sentence they print first (a quick preset's: its numbers are not meaningful). The result's
    ``run_summary`` is the leaderboard as the run's summary on the command line shows it.
    """
    from fanflow.ml.leaderboard import as_json, summary_markdown, write_leaderboard

    _check_k(k)
    if policy not in POLICIES:
        raise ParameterError(f"policy: expected one of {POLICIES}, got {policy!r}")
    if strategy != "auto" and strategy not in STRATEGIES:
        raise ParameterError(f"strategy: expected auto or one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(candidates, list | tuple):
        raise SelectionError(f"candidates: expected a list of training results, got {type(candidates).__name__}")
    ranked = rank(list(candidates), metric, "val")
    if not ranked:
        raise SelectionError("no model was trained: every training branch failed")
    missing = len(candidates) - len(ranked)
    y_val = np.asarray(data["val"]["y"]).astype(bool)
    trivial = trivial_scores(y_val, metric)
    bar = effective_bar(float(at_least), trivial, float(margin), metric)
    better = higher_is_better(metric)
    passing = [c for s, c in ranked if (s >= bar if better else s <= bar)]

    bar_record = {"metric": metric, "split": "val", "at_least": float(at_least), "margin": float(margin),
                  "trivial": trivial, "effective": bar, "raised": bar != float(at_least)}
    enough = len(passing) >= k or (allow_fewer and passing)
    chosen, aggregation, tried, baseline = [], None, [], None
    if enough:
        scores = {c["name"]: np.asarray(c["scores"]["val"]) for c in passing}
        order = [c["name"] for c in passing]
        aggregation, tried = _ensemble_choice(y_val, scores, order, min(k, len(order)), policy, strategy)
        by_name = {c["name"]: c for c in passing}
        chosen = [by_name[n] for n in aggregation["members"]]
        ensemble_val = emit([scores[n] for n in aggregation["members"]], aggregation["strategy"],
                            aggregation["threshold"])
        first = scores[order[0]]
        baseline = {"member": order[0], "threshold": count_threshold(first, int(ensemble_val.sum())),
                    "matched": "the ensemble's tag count on validation"}
        baseline["val_jaccard"] = jaccard(y_val, first >= baseline["threshold"])
        aggregation = {k_: v for k_, v in aggregation.items() if k_ != "tried"}
        aggregation["val"] = evaluate(y_val, ensemble_val.astype(np.float32), 0.5, data.get("tags"))
    message = _message(ranked, passing, k, bar_record, metric, missing, chosen, aggregation)
    board = _board(ranked, passing, chosen, tried, bar, metric, policy, k, aggregation)
    selected = [
        {**c, "rank": i + 1,
         "selection": {"metric": metric, "split": "val", "score": _score(c, metric, "val"), "at_least": bar,
                       "policy": policy}}
        for i, c in enumerate(chosen)
    ]
    result = {
        "models": selected,
        "aggregation": aggregation,
        "baseline": baseline,
        "bar": bar_record,
        "policy": policy,
        "k": k,
        "passed": bool(enough),
        "message": message,
        "failed_branches": missing,
        "board": board,
        "run": _run_info(run, data, caveat),
        "tried": [{k_: v for k_, v in t.items() if k_ != "tried"} for t in tried],
    }
    result["leaderboard"] = write_leaderboard(result, _scratch() / "leaderboard")
    result[SUMMARY_KEY] = summary_markdown(as_json(result))
    return result


def require_bar(selection: dict) -> list[dict]:
    """The models to serve; fails the run with the selection's one-line message when too few
    reached the bar (the leaderboard is written by then)."""
    if not selection.get("passed"):
        where = selection.get("leaderboard", {}).get("html")
        raise SelectionError(selection["message"] + (f"; leaderboard: {where}" if where else ""))
    return selection["models"]


def _message(ranked, passing, k, bar, metric, missing, chosen, aggregation) -> str:
    sign = "≥" if higher_is_better(metric) else "≤"
    if chosen:
        return (f"{len(passing)} of {len(ranked)} model(s) reach {metric} {sign} {bar['effective']:.3f} on "
                f"validation; serving {' + '.join(c['name'] for c in chosen)} by {aggregation['strategy']} "
                f"(validation {metric} {aggregation['jaccard']:.3f})")
    # the model that would have had to pass: the best one below the bar
    short = ranked[len(passing)]
    score, name = short[0], short[1]["name"]
    gap = abs(bar["effective"] - score)
    reason = ""
    if bar["raised"]:
        worst = max(bar["trivial"], key=bar["trivial"].get)
        reason = (f" (raised from {bar['at_least']:.3f}: the {worst.replace('_', '-')} predictor scores "
                  f"{bar['trivial'][worst]:.3f}, margin {bar['margin']:.3f})")
    lead = (f"no model reached {metric} {sign} {bar['effective']:.3f} on validation{reason}, {k} needed"
            if not passing else
            f"{len(passing)} of {len(ranked)} model(s) reached {metric} {sign} {bar['effective']:.3f} on "
            f"validation{reason}, {k} needed")
    failed = f"; {missing} training branch(es) failed" if missing else ""
    return (f"{lead}: the best {'remaining ' if passing else ''}model, {name}, scored {score:.3f}, "
            f"{gap:.3f} short{failed}; try more training (-p epochs=… or -p min_steps=…), larger clips "
            f"(-p size=…, -p frames=…), more labelled clips, or a lower -p min_accuracy")


def _board(ranked, passing, chosen, tried, bar, metric, policy, k, aggregation) -> list[dict]:
    """One row per trained model: its figures, whether it passed, was chosen, and why not."""
    chosen_names = [c["name"] for c in chosen]
    passing_names = [c["name"] for c in passing]
    best_tried = next((t for t in tried if aggregation and t["strategy"] == aggregation["strategy"]), None)
    rows = []
    for position, (score, c) in enumerate(ranked, start=1):
        name = c["name"]
        if name in chosen_names:
            why = None
        elif name not in passing_names:
            why = f"below the bar: {metric} {score:.3f} against {bar:.3f}"
        elif not chosen_names:
            why = f"too few models reached the bar ({len(passing_names)} of {k})"
        elif policy == "top_k":
            why = f"rank {passing_names.index(name) + 1} among those that pass; top_k keeps {k}"
        elif best_tried and name in best_tried["tried"]:
            why = (f"as the next member the ensemble would score {best_tried['tried'][name]:.3f} on validation, "
                   f"against {aggregation['jaccard']:.3f} with those kept")
        else:
            why = "not needed: the ensemble was complete before it was tried"
        val, test = c["metrics"]["val"], c["metrics"]["test"]
        rows.append({
            "position": position,
            "name": name,
            "recipe": c.get("recipe"),
            "family": c.get("family"),
            "val": _headline(val),
            "test": _headline(test),
            "passes_bar": name in passing_names,
            "selected": name in chosen_names,
            "member_rank": chosen_names.index(name) + 1 if name in chosen_names else None,
            "why_not": why,
            "train_seconds": c.get("train_seconds"),
            "rounds": c.get("rounds"),
            "best_round": c.get("best_round"),
            "model_sha256": c.get("model_sha256"),
            "card": c.get("card"),
        })
    return rows


HEADLINE_METRICS = ("jaccard", "micro_f1", "micro_recall", "micro_precision", "subset_accuracy",
                    "missed_per_clip", "false_per_clip", "tags_per_clip")


def _headline(metrics: dict) -> dict:
    return {m: metrics.get(m) for m in HEADLINE_METRICS}


def _run_info(run: dict | None, data: dict, caveat: str = "") -> dict:
    from fanflow.runtime import run_id

    report = data.get("report") or {}
    return {
        "id": run_id(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": dict(run or {}),
        "caveat": caveat,
        "data": {k: report.get(k) for k in ("source", "folder", "seed", "clips", "frames", "size", "tags",
                                            "skipped")
                 if k in report},
    }


def _scratch() -> Path:
    from fanflow.runtime import scratch_dir

    return Path(scratch_dir())
