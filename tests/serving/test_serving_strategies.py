"""The ensemble strategies on their own: properties that hold for any members' answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanflow.serving.model_server import tag_lists
from fanflow.serving.strategies import Strategy
from fanflow.serving.wire import TagBatch

VOCABULARY = ["cat", "dog", "owl", "fox"]


def batch(scores, threshold=0.5, vocabulary=VOCABULARY) -> TagBatch:
    scores = np.asarray(scores, dtype=np.float32)
    return TagBatch(tag_lists(scores, tuple(vocabulary), threshold), list(vocabulary), scores, threshold)


@st.composite
def answers(draw):
    n = draw(st.integers(1, 3))
    count = draw(st.integers(1, 4))
    rows = st.lists(st.floats(0, 1, width=32), min_size=4, max_size=4)
    return [(f"m{k}", batch(draw(st.lists(rows, min_size=n, max_size=n)))) for k in range(count)]


@settings(max_examples=60, deadline=None)
@given(answers())
def test_union_holds_majority_holds_intersection(members):
    union, majority, intersection = (
        Strategy(s).combine(members) for s in ("union", "majority", "intersection")
    )
    for u, m, i in zip(union.tags, majority.tags, intersection.tags, strict=True):
        assert set(i) <= set(m) <= set(u)


@settings(max_examples=60, deadline=None)
@given(answers())
def test_provenance_explains_every_tag(members):
    names = [name for name, _ in members]
    for strategy in ("union", "intersection", "majority", "mean", "weighted"):
        combined = Strategy(strategy, weights={"m0": 3.0}).combine(members)
        for tags, provenance in zip(combined.tags, combined.provenance, strict=True):
            assert [p["tag"] for p in provenance] == tags
            for p in provenance:
                assert set(p["found_by"]) <= set(names)
                assert list(p["scores"]) == names  # every member knows every tag here
                if strategy == "union":
                    assert p["found_by"] and p["score"] == pytest.approx(max(p["scores"].values()), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(answers())
def test_equal_weights_are_the_mean(members):
    mean = Strategy("mean", threshold=0.4).combine(members)
    weighted = Strategy("weighted", threshold=0.4, weights={name: 2.5 for name, _ in members}).combine(
        members
    )
    np.testing.assert_allclose(mean.scores, weighted.scores, atol=1e-6)
    assert mean.tags == weighted.tags


def test_one_member_is_itself_under_every_vote():
    member = batch([[0.9, 0.2, 0.5, 0.0]])
    for strategy in ("union", "intersection", "majority"):
        assert Strategy(strategy).combine([("solo", member)]).tags == [["cat", "owl"]]


def test_a_tag_outside_a_members_vocabulary_counts_only_where_known():
    a = batch([[0.9, 0.0]], vocabulary=["cat", "dog"])
    b = batch([[0.7, 0.6]], vocabulary=["cat", "bee"])
    combined = Strategy("mean").combine([("a", a), ("b", b)])
    assert combined.vocabulary == ["cat", "dog", "bee"]
    np.testing.assert_allclose(combined.scores, [[0.8, 0.0, 0.6]], atol=1e-6)  # bee: b alone
    assert combined.tags == [["cat", "bee"]]
    assert combined.provenance[0][1]["scores"] == {"b": pytest.approx(0.6)}
    assert Strategy("intersection").combine([("a", a), ("b", b)]).tags == [["cat"]]


def test_members_must_answer_for_the_same_clips():
    with pytest.raises(ValueError, match="different numbers of clips"):
        Strategy().combine([("a", batch([[0.1] * 4])), ("b", batch([[0.1] * 4, [0.2] * 4]))])
