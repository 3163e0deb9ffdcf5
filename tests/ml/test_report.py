import json

import numpy as np
import pytest

from fanflow.ml.report import evaluate_ensemble, offline_report
from fanflow.ml.select import choose
from fanflow.ml.stats import compare, per_clip
from fanflow.ml.train import fit

from .helpers import TINY

TAGS = ["a", "b", "c"]
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)


def selection_of(members, val_scores, strategy="union", threshold=0.5, baseline=("m1", 0.5)):
    return {"models": [{"name": n, "scores": {"val": val_scores[n]}} for n in members],
            "aggregation": {"strategy": strategy, "threshold": threshold, "members": members},
            "baseline": {"member": baseline[0], "threshold": baseline[1]}}


def test_hand_computed_rows_and_the_deployable_baseline():
    m1 = np.array([[0.9, 0.1, 0.6], [0.8, 0.05, 0.11], [0.12, 0.9, 0.05], [0.7, 0.8, 0.9]], dtype=np.float32)
    m2 = np.array([[0.02, 0.15, 0.1], [0.9, 0.8, 0.04], [0.13, 0.7, 0.8], [0.03, 0.6, 0.7]], dtype=np.float32)
    sel = selection_of(["m1", "m2"], {"m1": m1, "m2": m2}, baseline=("m1", 0.11))
    ev = evaluate_ensemble(sel, Y, Y, {"m1": m1, "m2": m2}, TAGS)
    rows = ev["rows"]
    assert (rows["m1"]["missed_per_clip"], rows["m1"]["false_per_clip"]) == (2 / 4, 1 / 4)
    served = rows["served: union"]
    assert served["missed_per_clip"] == 0.0 and served["false_per_clip"] == 1 / 4
    base = rows["baseline: m1 @ 0.110"]
    assert base["tags_per_clip"] == served["tags_per_clip"] == 9 / 4 and base["recall"] == pytest.approx(6 / 8)
    assert ev["headline"]["recall"]["difference"] == pytest.approx(2 / 8)
    assert ev["served_mismatched_clips"] is None


def test_served_tags_are_what_the_report_measures_and_mismatches_are_counted():
    s = np.where(Y, 0.9, 0.1).astype(np.float32)
    sel = selection_of(["m1"], {"m1": s})
    served = Y.copy()
    served[0, 2] = True  # the gateway said one more tag than the member's scores give
    ev = evaluate_ensemble(sel, Y, Y, {"m1": s}, TAGS, served=served)
    assert ev["served_mismatched_clips"] == 1 and ev["rows"]["served: union"]["false_per_clip"] == 0.25


def test_bootstrap_intervals_say_when_a_difference_is_real():
    rng = np.random.default_rng(0)
    y = rng.random((1000, 5)) < 0.3
    better, worse = y.copy(), y.copy()
    worse[rng.random(y.shape) < 0.1] = False  # misses 10 % of the entities
    real = compare(y, better, worse)
    assert real["recall"]["significant"] and real["recall"]["low"] > 0.05
    noise = y.copy()
    flip = np.flatnonzero((rng.random(y.shape) < 0.002).ravel())
    noise.ravel()[flip[: len(flip) // 2]] = False
    same = compare(y, noise, y)
    assert not same["jaccard"]["significant"] or abs(same["jaccard"]["difference"]) < 0.01
    assert compare(y, better, worse) == real  # a fixed seed: the same interval every time
    counts = per_clip(y, worse)
    assert counts["found"].sum() + counts["missed"].sum() == y.sum()


def test_the_report_files(small_data, scratch):
    trained = [fit(small_data, name, params=TINY[name]) for name in ("cnn_batchnorm", "cnn_motion", "logistic")]
    selection = choose(trained, small_data, k=2, at_least=0.0, margin=0.0, run={"seed": 0},
                       caveat="Tiny data: these numbers are not meaningful.")
    files = offline_report(small_data, selection)
    assert {"markdown", "html", "chart", "json", "examples", "summary"} <= set(files)
    doc = json.loads(files["json"].read_text())
    assert doc["format"] == "fanflow.report/1" and doc["members"] == [c["name"] for c in selection["models"]]
    assert doc["leaderboard"]["format"] == "fanflow.leaderboard/1" and len(doc["leaderboard"]["models"]) == 3
    assert set(doc["figures"]) == {"recall_per_entity", "entities", "errors_per_clip"}
    assert {"difference", "low", "high", "significant"} <= set(doc["headline"]["recall"])
    md = files["markdown"].read_text()
    assert md.startswith("# Report\n\n**Tiny data: these numbers are not meaningful.**\n")
    assert "Tiny data: these numbers are not meaningful." in files["html"].read_text()
    for needle in ("## Headline", "deployable baseline", "95 % interval", "## Leaderboard", "## Model cards",
                   "## Example clips", "Secondary, not deployable"):
        assert needle in md
    page = files["html"].read_text()
    assert "data:image/png;base64," in page and "data:image/gif;base64," in page and "<details id=\"card-" in page
    assert files["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(p.read_bytes()[:3] == b"GIF" for p in files["examples"])
    # every member row is the training step's own test measurement
    for c in selection["models"]:
        assert doc["rows"][c["name"]]["missed_per_clip"] == pytest.approx(c["metrics"]["test"]["missed_per_clip"])
