import warnings

import pytest

from fanflow.ml.select import SelectionError, top_k


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
