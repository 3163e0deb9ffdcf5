import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fanflow.ml.report import coverage, lowered_threshold, offline_coverage, write_report
from fanflow.ml.select import top_k
from fanflow.ml.train import fit

from .helpers import TINY

TAGS = ["a", "b", "c"]
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]])
# m1 misses b in clip 2 and c in clip 3 (scoring them 0.05) and falsely tags c in clip 1;
# m2 misses a in clips 1 and 4 (scoring them 0.02 and 0.03).
M1 = np.array([[0.9, 0.1, 0.6], [0.8, 0.05, 0.11], [0.12, 0.9, 0.05], [0.7, 0.8, 0.9]])
M2 = np.array([[0.02, 0.15, 0.1], [0.9, 0.8, 0.04], [0.13, 0.7, 0.8], [0.03, 0.6, 0.7]])


def test_hand_computed_coverage():
    cov = coverage(Y, {"m1": M1, "m2": M2}, {"m1": 0.5, "m2": 0.5}, TAGS)
    m1, m2 = cov["members"]["m1"], cov["members"]["m2"]
    assert (m1["missed_per_clip"], m1["false_per_clip"]) == (2 / 4, 1 / 4)
    assert (m2["missed_per_clip"], m2["false_per_clip"]) == (2 / 4, 0.0)
    union, inter, mean = (cov["combined"][k] for k in ("union", "intersection", "mean"))
    assert union["missed_per_clip"] == 0.0 and union["false_per_clip"] == 1 / 4  # every entity found
    assert union["precision"] == pytest.approx(8 / 9) and union["jaccard"] == pytest.approx(3.5 / 4)
    assert inter["missed_per_clip"] == 1.0 and inter["false_per_clip"] == 0.0
    assert union["per_entity"]["a"] == {"recall": 1.0, "precision": 1.0, "support": 3}
    assert m2["per_entity"]["a"]["recall"] == pytest.approx(1 / 3)
    # mean score at 0.5: only a in clip 2 and b, c where both members agree survive
    assert mean["missed_per_clip"] == 1.0 and mean["false_per_clip"] == 0.0
    # the union emits 9 tags; m1 lowered to 0.11 emits 9 too and finds 6 of the 8 entities
    # (m2 lowered to 0.1 as well: a tie, which goes to the first member)
    base = cov["baseline"]
    assert base["tags_emitted"] == union["tags_emitted"] == 9
    assert base["member"] == "m1" and base["threshold"] == pytest.approx(0.11)
    s = cov["summary"]
    assert s["union_recall"] == 1.0 and s["baseline_recall"] == pytest.approx(6 / 8)
    assert s["union_beats_baseline"] and s["recall_gain_over_baseline"] == pytest.approx(2 / 8)
    assert s["missed_reduction"] == 1.0 and s["union_fewer_missed_than_every_member"]


def test_lowered_threshold_emits_the_asked_count():
    scores = np.array([[0.9, 0.2], [0.5, 0.4]])
    assert (scores >= lowered_threshold(scores, 3)).sum() == 3
    assert (scores >= lowered_threshold(scores, 0)).sum() == 0
    assert (scores >= lowered_threshold(scores, 10)).sum() == 4


@settings(max_examples=60, deadline=None)
@given(
    y=arrays(np.uint8, (12, 4), elements=st.integers(0, 1)),
    s1=arrays(np.float64, (12, 4), elements=st.floats(0, 1)),
    s2=arrays(np.float64, (12, 4), elements=st.floats(0, 1)),
    t1=st.floats(0.05, 0.95),
    t2=st.floats(0.05, 0.95),
)
def test_the_union_never_misses_more_and_the_intersection_never_says_more(y, s1, s2, t1, t2):
    cov = coverage(y, {"one": s1, "two": s2}, {"one": t1, "two": t2}, list("wxyz"))
    union, inter = cov["combined"]["union"], cov["combined"]["intersection"]
    for member in cov["members"].values():
        assert union["missed_per_clip"] <= member["missed_per_clip"]
        assert inter["false_per_clip"] <= member["false_per_clip"]
        for tag in "wxyz":
            if member["per_entity"][tag]["recall"] is not None:
                assert union["per_entity"][tag]["recall"] >= member["per_entity"][tag]["recall"]
    assert cov["baseline"]["tags_emitted"] >= union["tags_emitted"]


def test_report_files(tmp_path):
    cov = coverage(Y, {"m1": M1, "m2": M2}, {"m1": 0.5, "m2": 0.5}, TAGS)
    files = write_report(cov, tmp_path / "report")
    assert set(files) == {"markdown", "html", "chart", "json"}
    assert files["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files["markdown"].read_text()
    assert "| union | 1.000 | 0.889 | 0.875 | 0.000 | 0.250 | 2.250 |" in md and "baseline: m1 @ 0.110" in md
    assert "finds more entities (recall +25.00 points)" in md
    page = files["html"].read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert json.loads(files["json"].read_text())["summary"]["union_recall"] == 1.0


def test_the_verdict_says_so_when_the_union_does_not_beat_the_baseline(tmp_path):
    same = {"m1": M1, "m1 again": M1.copy()}
    cov = coverage(Y, same, {"m1": 0.5, "m1 again": 0.5}, TAGS)
    assert not cov["summary"]["union_beats_baseline"]
    md = write_report(cov, tmp_path)["markdown"].read_text()
    assert "does not beat it (recall +0.00 points)" in md


def test_offline_coverage_loads_the_selected_models(small_data):
    trained = [fit(small_data, name, params=TINY[name]) for name in ("cnn_batchnorm", "logistic")]
    chosen = top_k(trained, k=2, metric="jaccard")
    out = offline_coverage(small_data, chosen)
    assert out["summary"]["members"] == [c["name"] for c in chosen]
    assert out["summary"]["clips"] == 80
    saved = json.loads(out["json"].read_text())
    test_metrics = {c["name"]: c["metrics"]["test"] for c in chosen}
    for name, member in saved["members"].items():  # same scores as the training step measured
        assert member["missed_per_clip"] == pytest.approx(test_metrics[name]["missed_per_clip"])
        assert member["false_per_clip"] == pytest.approx(test_metrics[name]["false_per_clip"])
