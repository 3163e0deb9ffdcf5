import json
import warnings

import numpy as np
import pytest

from fanflow.ml.select import SelectionError, choose, effective_bar, require_bar, top_k, trivial_scores


def cand(name, val, missed=0.1, test=0.5):
    return {"name": name, "model": f"{name}.zip",
            "metrics": {"val": {"jaccard": val, "missed_per_clip": missed, "micro_f1": val},
                        "test": {"jaccard": test, "missed_per_clip": missed}}}


def test_best_first_on_validation_not_test():
    chosen = top_k([cand("a", 0.91, test=0.99), cand("b", 0.95, test=0.90), cand("c", 0.93)], k=2,
                   metric="jaccard", at_least=0.90)
    assert [c["name"] for c in chosen] == ["b", "c"]
    assert [c["rank"] for c in chosen] == [1, 2]
    assert chosen[0]["selection"] == {"metric": "jaccard", "split": "val", "score": 0.95, "at_least": 0.90}
    assert chosen[0]["model"] == "b.zip"


def test_ties_go_to_fewer_missed_then_to_the_name():
    cands = [cand("zeta", 0.95, missed=0.05), cand("beta", 0.95, missed=0.08), cand("alpha", 0.95, missed=0.08)]
    for order in (cands, cands[::-1], [cands[1], cands[0], cands[2]]):
        assert [c["name"] for c in top_k(order, k=3, metric="jaccard")] == ["zeta", "alpha", "beta"]


def test_too_few_above_the_bar_fails_listing_every_candidate_and_score():
    cands = [cand("cnn", 0.93), cand("logistic", 0.71), cand("forest", 0.68)]
    with pytest.raises(SelectionError) as err:
        top_k(cands, k=2, metric="jaccard", at_least=0.90)
    message = str(err.value)
    assert "1 of 3 candidate(s) reach jaccard ≥ 0.9 on val, 2 wanted" in message
    for line in ("cnn: val jaccard = 0.9300", "logistic: val jaccard = 0.7100  (below the bar)",
                 "forest: val jaccard = 0.6800  (below the bar)"):
        assert line in message


def test_allow_fewer_warns_and_keeps_those_that_passed():
    cands = [cand("cnn", 0.93), cand("logistic", 0.71)]
    with pytest.warns(UserWarning, match="keeping the 1 that passed"):
        chosen = top_k(cands, k=2, metric="jaccard", at_least=0.90, allow_fewer=True)
    assert [c["name"] for c in chosen] == ["cnn"]
    with pytest.raises(SelectionError, match="0 of 2"):
        top_k(cands, k=2, metric="jaccard", at_least=0.99, allow_fewer=True)


def test_no_warning_when_enough_pass_and_failed_branches_are_left_out():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = top_k([None, cand("a", 0.97), cand("b", 0.92)], k=2, metric="jaccard", at_least=0.9)
    assert [c["name"] for c in chosen] == ["a", "b"]
    with pytest.raises(SelectionError, match=r"1 branch\(es\) produced no result"):
        top_k([None, cand("a", 0.97)], k=2, metric="jaccard", at_least=0.9)


def test_a_lower_is_better_metric_ranks_ascending():
    chosen = top_k([cand("a", 0.9, missed=0.2), cand("b", 0.9, missed=0.05)], k=1, metric="missed_per_clip",
                   at_least=0.1)
    assert [c["name"] for c in chosen] == ["b"]


def test_bad_requests():
    with pytest.raises(SelectionError, match="no metric 'recall@5'"):
        top_k([cand("a", 0.9)], k=1, metric="recall@5")
    with pytest.raises(SelectionError, match="k: expected an integer >= 1"):
        top_k([cand("a", 0.9)], k=0, metric="jaccard")
    with pytest.raises(SelectionError, match="names must be unique"):
        top_k([cand("a", 0.9), cand("a", 0.8)], k=1, metric="jaccard")


# --------------------------------------------------------------------------- the bar


def test_the_trivial_predictors_on_mostly_empty_clips_and_the_raised_bar():
    y = np.zeros((100, 4), dtype=bool)
    y[:8, 0] = True  # 92 % of the clips show nothing
    trivial = trivial_scores(y)
    assert trivial["empty"] == pytest.approx(0.92) and trivial["all_tags"] == pytest.approx(0.08 * 0.25)
    assert effective_bar(0.90, trivial, 0.05, "jaccard") == pytest.approx(0.97)
    dense = np.ones((10, 4), dtype=bool)
    assert effective_bar(0.90, trivial_scores(dense), 0.05, "jaccard") == pytest.approx(1.05)
    assert trivial_scores(y, "micro_f1")["empty"] == 0.0


# --------------------------------------------------------------------------- choose


def scored(name, y, flip, seed):
    """A candidate whose validation scores are y with the (clip, entity) pairs in ``flip``
    scored wrongly; test scores equal the validation ones."""
    rng = np.random.default_rng(seed)
    s = np.where(y, 0.8, 0.2) + rng.uniform(-0.1, 0.1, y.shape)
    s[flip] = 1 - s[flip]
    s = s.astype(np.float32)
    j = float(np.mean([(a & b).sum() / max((a | b).sum(), 1) if (a | b).any() else 1.0
                       for a, b in zip(y, s >= 0.5, strict=True)]))
    metrics = {"jaccard": j, "missed_per_clip": 0.0, "micro_f1": j}
    return {"name": name, "model": f"{name}.zip", "metrics": {"val": metrics, "test": metrics},
            "scores": {"val": s, "test": s}, "train_seconds": 1.0}


@pytest.fixture
def zoo():
    rng = np.random.default_rng(0)
    y = rng.random((300, 5)) < 0.3
    y[:, 0] |= ~y.any(axis=1)  # every clip shows something
    errors = rng.random(y.shape)
    twin_errors = (errors < 0.12) & y  # a and its twin miss the same entities
    other = (rng.random(y.shape) < 0.15) & y  # c misses others
    zoo = [scored("a", y, twin_errors, 1), scored("a_twin", y, twin_errors & (errors < 0.11), 2),
           scored("c", y, other, 3), scored("weak", y, rng.random(y.shape) < 0.4, 4)]
    data = {"val": {"y": y}, "test": {"y": y}, "tags": list("vwxyz"), "report": {"source": "test"}}
    return zoo, data


def test_greedy_selection_adds_the_model_that_makes_different_mistakes(zoo, scratch):
    candidates, data = zoo
    ranked_alone = [c["name"] for c in sorted(candidates, key=lambda c: -c["metrics"]["val"]["jaccard"])]
    assert ranked_alone[:2] == ["a_twin", "a"]  # top_k would serve the twins
    result = choose(candidates, data, k=2, at_least=0.5, strategy="union")
    assert [c["name"] for c in result["models"]] == ["a_twin", "c"]
    assert result["passed"] and result["aggregation"]["strategy"] == "union"
    board = {row["name"]: row for row in result["board"]}
    assert board["a"]["passes_bar"] and not board["a"]["selected"]
    assert "as the next member the ensemble would score" in board["a"]["why_not"]
    assert board["weak"]["why_not"].startswith("below the bar")
    top = choose(candidates, data, k=2, at_least=0.5, policy="top_k", strategy="union")
    assert [c["name"] for c in top["models"]] == ["a_twin", "a"]
    assert top["aggregation"]["jaccard"] < result["aggregation"]["jaccard"]


def test_auto_strategy_and_the_deployable_baseline_are_chosen_on_validation(zoo, scratch):
    candidates, data = zoo
    result = choose(candidates, data, k=2, at_least=0.5)
    tried = {t["strategy"]: t["jaccard"] for t in result["tried"]}
    assert set(tried) == {"mean", "union", "majority"}
    assert result["aggregation"]["jaccard"] == max(tried.values())
    base = result["baseline"]
    assert base["member"] == result["models"][0]["name"]
    ensemble_tags = result["aggregation"]["val"]["tags_per_clip"] * 300
    member_val = candidates[[c["name"] for c in candidates].index(base["member"])]["scores"]["val"]
    assert (member_val >= base["threshold"]).sum() == pytest.approx(ensemble_tags, abs=2)


def test_the_leaderboard_is_written_with_stable_fields(zoo, scratch):
    candidates, data = zoo
    result = choose(candidates, data, k=2, at_least=0.5, run={"seed": 3})
    doc = json.loads(result["leaderboard"]["json"].read_text())
    assert doc["format"] == "fanflow.leaderboard/1"
    assert doc["run"]["params"] == {"seed": 3} and doc["run"]["data"]["source"] == "test"
    assert {"bar", "models", "ensemble", "baseline", "passed", "message", "policy", "k"} <= set(doc)
    row = doc["models"][0]
    assert {"position", "name", "val", "test", "passes_bar", "selected", "member_rank", "why_not",
            "train_seconds"} <= set(row)
    assert set(row["val"]) >= {"jaccard", "micro_f1", "missed_per_clip", "false_per_clip"}
    md = result["leaderboard"]["markdown"].read_text()
    assert "| 1 | a_twin |" in md and "selected (member 1)" in md
    assert "<table>" in result["leaderboard"]["html"].read_text()


def test_when_no_model_reaches_the_bar_the_leaderboard_is_written_and_the_gate_fails_in_one_line(zoo, scratch):
    candidates, data = zoo
    result = choose(candidates, data, k=2, at_least=0.999)
    assert not result["passed"] and result["models"] == []
    assert result["leaderboard"]["json"].is_file()
    with pytest.raises(SelectionError) as err:
        require_bar(result)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no model reached jaccard ≥ 0.999 on validation, 2 needed: the best model, a_twin, scored")
    assert "short; try more training" in message and "leaderboard:" in message


def test_the_run_summary_lists_every_model_with_both_metrics_and_why_not(zoo, scratch):
    candidates, data = zoo
    result = choose(candidates, data, k=2, at_least=0.5, strategy="union")
    summary = result["run_summary"]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in rows] == ["a_twin", "a", "c", "weak"]
    assert "val Jaccard" in summary and "test Jaccard" in summary and "Bar: jaccard ≥ 0.500" in summary
    by_name = {row.split(" | ")[1]: row for row in rows}
    assert "selected (member 1)" in by_name["a_twin"] and "selected (member 2)" in by_name["c"]
    assert "as the next member the ensemble would score" in by_name["a"] and "below the bar" in by_name["weak"]
    assert "Chosen on validation: a_twin + c combined by union" in summary
    assert "not meaningful" not in summary  # no caveat unless the run has one


def test_a_runs_caveat_comes_first_in_the_summary_and_the_leaderboard_even_when_the_bar_is_missed(zoo, scratch):
    candidates, data = zoo
    note = "Quick preset: these numbers are not meaningful."
    result = choose(candidates, data, k=2, at_least=0.999, caveat=note)
    assert not result["passed"]
    summary = result["run_summary"]
    assert summary.index(note) < summary.index("Bar:") and "below the bar" in summary
    assert "Chosen on validation" not in summary and result["message"] not in summary  # the bar step says that
    assert note in result["leaderboard"]["markdown"].read_text()
    assert note in result["leaderboard"]["html"].read_text()
    assert json.loads(result["leaderboard"]["json"].read_text())["run"]["caveat"] == note


def test_a_bar_under_the_empty_predictor_is_raised(scratch):
    y = np.zeros((100, 3), dtype=bool)
    y[:5, 1] = True
    empty = scored("silent", y, np.zeros_like(y), 0)
    empty["scores"]["val"][:] = 0.1  # emits nothing: 0.95 Jaccard on these clips
    empty["metrics"]["val"]["jaccard"] = 0.95
    data = {"val": {"y": y}, "test": {"y": y}, "tags": list("abc")}
    result = choose([empty, {**empty, "name": "silent2"}], data, k=2, at_least=0.9)
    assert not result["passed"] and result["bar"]["raised"] and result["bar"]["effective"] == pytest.approx(1.0)
    assert "raised from 0.900: the empty predictor scores 0.950" in result["message"]
