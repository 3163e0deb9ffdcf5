import numpy as np
import pytest

from fanflow.ml.metrics import BAR_METRIC, evaluate, higher_is_better, jaccard, per_entity

# Four clips, three entities.
Y = np.array([[1, 0, 0],
              [1, 1, 0],
              [0, 1, 1],
              [1, 1, 1]])
P = np.array([[1, 0, 0],   # exact
              [1, 0, 1],   # one found, one missed, one false
              [0, 1, 1],   # exact
              [0, 0, 0]])  # nothing: three missed


def test_hand_computed_values():
    m = evaluate(Y, P)
    # per clip |P∩Y| / |P∪Y|: 1, 1/3, 1, 0
    assert m["jaccard"] == pytest.approx((1 + 1 / 3 + 1 + 0) / 4)
    assert m["subset_accuracy"] == pytest.approx(2 / 4)
    assert m["hamming_accuracy"] == pytest.approx(7 / 12)
    # tp = 4, emitted = 5, present = 8
    assert m["micro_precision"] == pytest.approx(4 / 5)
    assert m["micro_recall"] == pytest.approx(4 / 8)
    assert m["micro_f1"] == pytest.approx(2 * 0.8 * 0.5 / 1.3)
    assert m["missed_per_clip"] == pytest.approx(4 / 4)
    assert m["false_per_clip"] == pytest.approx(1 / 4)
    assert m["tags_per_clip"] == pytest.approx(5 / 4)
    e = m["per_entity"]
    assert e["0"] == {"precision": 1.0, "recall": 2 / 3, "f1": pytest.approx(0.8), "support": 3, "predicted": 2}
    assert e["1"]["precision"] == 1.0 and e["1"]["recall"] == pytest.approx(1 / 3)
    assert e["2"]["precision"] == pytest.approx(1 / 2) and e["2"]["recall"] == pytest.approx(1 / 2)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.5) / 3)


def test_scores_are_thresholded():
    scores = np.where(P == 1, 0.7, 0.2)
    assert evaluate(Y, scores, threshold=0.5)["jaccard"] == evaluate(Y, P)["jaccard"]
    assert evaluate(Y, scores, threshold=0.1)["tags_per_clip"] == 3.0
    assert evaluate(Y, scores, threshold=0.8)["tags_per_clip"] == 0.0


def test_an_empty_predictor_cannot_pass_the_bar_although_its_hamming_accuracy_is_high():
    rng = np.random.default_rng(0)
    y = np.zeros((500, 10), dtype=np.uint8)
    for row in y:  # 1 to 3 entities per clip, as in the moving digits
        row[rng.choice(10, rng.integers(1, 4), replace=False)] = 1
    m = evaluate(y, np.zeros(y.shape))
    assert BAR_METRIC == "jaccard"
    assert m[BAR_METRIC] == 0.0
    assert m["hamming_accuracy"] > 0.78
    # predicting every entity everywhere does not pass either
    assert evaluate(y, np.ones(y.shape))[BAR_METRIC] < 0.25


def test_agrees_with_scikit_learn():
    from sklearn.metrics import f1_score, jaccard_score

    rng = np.random.default_rng(1)
    y = (rng.random((300, 6)) < 0.3).astype(int)
    y[y.sum(1) == 0, 0] = 1
    p = (rng.random((300, 6)) < 0.35).astype(int)
    m = evaluate(y, p)
    assert m["jaccard"] == pytest.approx(jaccard_score(y, p, average="samples"))
    assert m["micro_f1"] == pytest.approx(f1_score(y, p, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))


def test_undefined_ratios_and_empty_clips():
    assert jaccard(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0  # nothing to find, nothing said
    e = per_entity(np.array([[1, 0]]), np.array([[0, 0]]), ["a", "b"])
    assert e["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert e["b"] == {"precision": None, "recall": None, "f1": None, "support": 0, "predicted": 0}


def test_direction_of_metrics():
    assert higher_is_better("jaccard") and higher_is_better("micro_f1")
    assert not higher_is_better("missed_per_clip")
