"""The offline combinations are the gateway's strategies: same tags on the same scores."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fanflow.ml.ensemble import count_threshold, emit, fit_strategy, tune_mean_threshold
from fanflow.serving.strategies import Strategy
from fanflow.serving.wire import TagBatch

TAGS = ["a", "b", "c"]


def served(strategy, threshold, members):
    answers = [(f"m{i}", TagBatch([[TAGS[j] for j in np.flatnonzero(row >= 0.5)] for row in s], TAGS, s))
               for i, s in enumerate(members)]
    batch = Strategy(strategy, threshold).combine(answers)
    out = np.zeros((len(members[0]), len(TAGS)), dtype=bool)
    for i, clip in enumerate(batch.tags):
        out[i, [TAGS.index(t) for t in clip]] = True
    return out


@settings(max_examples=40, deadline=None)
@given(
    scores=st.lists(arrays(np.float32, (6, 3), elements=st.floats(0, 1, width=32)), min_size=1, max_size=3),
    threshold=st.floats(0.05, 0.95),
    strategy=st.sampled_from(["union", "mean", "majority", "intersection"]),
)
def test_offline_tags_are_the_gateways(scores, threshold, strategy):
    assert np.array_equal(emit(scores, strategy, threshold), served(strategy, threshold, scores))


def test_mean_threshold_is_tuned_on_the_given_clips():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool)
    a = np.array([[0.6, 0.1], [0.2, 0.45], [0.7, 0.4], [0.3, 0.2]], dtype=np.float32)
    b = np.array([[0.3, 0.2], [0.1, 0.5], [0.5, 0.5], [0.1, 0.1]], dtype=np.float32)
    threshold, score = tune_mean_threshold(y, [a, b])
    assert score == 1.0 and 0.2 < threshold <= 0.45
    assert fit_strategy(y, [a, b], "union")["threshold"] == 0.5


def test_count_threshold_emits_the_asked_number_of_tags():
    scores = np.array([[0.9, 0.2], [0.5, 0.4]], dtype=np.float32)
    assert [(scores >= count_threshold(scores, n)).sum() for n in (0, 1, 3, 10)] == [0, 1, 3, 4]


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy: expected one of"):
        emit([np.zeros((1, 1))], "vote")
