import numpy as np
import pytest

from fanflow.ml.thresholds import GRID, align, jaccard_per_clip, tune


def test_aligned_scores_emit_exactly_where_the_threshold_does():
    rng = np.random.default_rng(0)
    proba = rng.random((200, 4)).astype(np.float32)
    thresholds = np.array([0.2, 0.5, 0.7, 0.05])
    aligned = align(proba, thresholds)
    assert aligned.dtype == np.float32 and aligned.min() >= 0 and aligned.max() <= 1
    assert np.array_equal(aligned >= 0.5, proba >= thresholds)
    # the order of clips within an entity is kept
    assert np.array_equal(np.argsort(aligned[:, 2], kind="stable"), np.argsort(proba[:, 2], kind="stable"))


def test_tuning_finds_a_lower_threshold_for_an_under_confident_entity():
    rng = np.random.default_rng(1)
    y = rng.random((400, 3)) < 0.3
    proba = np.where(y, 0.7, 0.1) + rng.normal(0, 0.03, y.shape)
    proba[:, 1] = np.where(y[:, 1], 0.25, 0.05)  # entity 1 is never scored above 0.5
    tuned = tune(y, proba)
    assert tuned["per_entity"][1] < 0.25 and tuned["jaccard"] == pytest.approx(1.0)
    assert jaccard_per_clip(y, proba >= 0.5).mean() < 0.9  # 0.5 everywhere misses entity 1
    assert all(t in GRID for t in tuned["per_entity"])


def test_a_rare_entity_keeps_the_shared_threshold():
    y = np.zeros((100, 2), dtype=bool)
    y[:50, 0] = True
    y[:3, 1] = True  # three clips: too few to trust a threshold of its own
    proba = np.where(y, 0.9, 0.1)
    proba[:3, 1] = 0.3
    tuned = tune(y, proba, min_support=10)
    assert tuned["per_entity"][1] == tuned["global"]


def test_jaccard_per_clip_counts_an_empty_clip_as_right_only_when_nothing_is_emitted():
    y = np.array([[0, 0], [1, 0], [1, 1]], dtype=bool)
    pred = np.array([[0, 0], [0, 0], [1, 0]], dtype=bool)
    assert jaccard_per_clip(y, pred).tolist() == [1.0, 0.0, 0.5]


def test_one_threshold_per_model_unless_asked_per_entity():
    rng = np.random.default_rng(2)
    y = rng.random((300, 3)) < 0.3
    proba = np.where(y, 0.9, 0.35) + rng.normal(0, 0.03, y.shape)
    proba[:, 1] = np.where(y[:, 1], 0.25, 0.05)  # no one threshold separates both entities
    shared = tune(y, proba, per_entity=False)
    assert len(set(shared["per_entity"])) == 1 and shared["per_entity"][0] == shared["global"]
    assert tune(y, proba)["jaccard"] > shared["jaccard"]
