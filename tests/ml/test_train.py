import hashlib
import json

import numpy as np
import pytest

from fanflow.ml import DataError, ParameterError
from fanflow.ml.models import load_model
from fanflow.ml.train import candidate_name, fit

from .helpers import TINY_CNN


def test_fit_returns_what_selection_and_serving_need(small_data, monkeypatch):
    monkeypatch.setenv("FANFLOW_CPUS", "2")
    out = fit(small_data, "cnn_batchnorm", params=TINY_CNN, seed=0)
    assert out["name"] == "cnn_batchnorm[batch_size=32,channels=8-16,epochs=2,min_steps=0]"
    assert out["family"] == "torch-cnn" and out["threads"] == 2 and out["device"] == "cpu"
    assert out["params"]["batchnorm"] is True and out["params"]["channels"] == [8, 16]
    assert set(out["metrics"]) == {"val", "test"}
    assert out["metrics"]["test"]["clips"] == 80 and "jaccard" in out["metrics"]["val"]
    assert out["train_seconds"] > 0
    model = load_model(out["model"])
    proba = model.predict_proba(small_data["test"]["x"])
    assert (proba >= model.threshold_).sum() / 80 == pytest.approx(out["metrics"]["test"]["tags_per_clip"])
    assert np.array_equal(out["scores"]["test"], proba) and out["scores"]["val"].shape == (80, 10)
    assert out["budget"] == {"steps": 20, "epochs": 2, "steps_per_epoch": 10, "warmup_epochs": 1, "earliest_stop": 2}
    card = json.loads(out["card"]["json"].read_text())
    digest = "sha256:" + hashlib.sha256(out["model"].read_bytes()).hexdigest()
    assert card["artifact"]["sha256"] == digest == out["model_sha256"]
    assert card["data"]["clips"] == {"train": 320, "val": 80, "test": 80}
    assert card["training"]["threads"] == 2 and card["training"]["rounds"] >= 1
    assert set(card["thresholds"]) == set(small_data["tags"])
    md = out["card"]["markdown"].read_text()
    assert md.startswith("# Model card: cnn_batchnorm[") and digest in md and "| jaccard |" in md
    json.dumps({k: v for k, v in out.items() if k not in ("model", "card", "scores")})  # travels as JSON


def test_params_and_keyword_overrides_are_the_same_item(small_data):
    a = fit(small_data, "logistic", params={"n_templates": 8, "max_rounds": 2})
    b = fit(small_data, "logistic", n_templates=8, max_rounds=2)
    c = fit(small_data, "logistic", params={"n_templates": 8}, max_rounds=2)
    assert a["name"] == b["name"] == c["name"] == "logistic[max_rounds=2,n_templates=8]"
    assert a["metrics"] == b["metrics"] == c["metrics"]
    x = small_data["test"]["x"]
    assert np.array_equal(load_model(a["model"]).predict_proba(x), load_model(b["model"]).predict_proba(x))


def test_a_grid_gives_distinct_names():
    names = {candidate_name("cnn", {"lr": lr, "dropout": d}) for lr in (0.01, 0.003) for d in (0.0, 0.1)}
    assert len(names) == 4 and "cnn[dropout=0.1,lr=0.003]" in names
    assert candidate_name("cnn", {}) == "cnn"


def test_mistakes_are_one_clear_error(small_data):
    with pytest.raises(ParameterError, match=r"unknown hyperparameter\(s\) 'depth'"):
        fit(small_data, "cnn", params={"depth": 4})
    with pytest.raises(ParameterError, match="unknown model 'svm'"):
        fit(small_data, "svm")
    with pytest.raises(DataError, match=r"data\.val: expected"):
        fit({**small_data, "val": None}, "cnn")
    bad = {**small_data, "test": {"x": np.zeros((3, 8, 32, 32), np.uint8), "y": np.zeros((4, 10))}}
    with pytest.raises(DataError, match=r"data\.test: expected x \(n, T, H, W\) and y \(n, K\)"):
        fit(bad, "cnn")


def test_run_wide_training_settings_reach_every_model_that_has_them(small_data):
    training = {"epochs": 1, "min_steps": 0, "max_steps": 50, "patience": 1, "min_epochs": 3, "threshold": 0.0,
                "batch_size": 64}
    cnn = fit(small_data, "cnn", params={"channels": [8, 16]}, training=training)
    assert cnn["name"] == "cnn[channels=8-16]"  # run-wide settings do not rename the branch
    assert cnn["params"]["epochs"] == 1 and cnn["params"]["batch_size"] == 64 and cnn["params"]["threshold"] is None
    assert cnn["budget"]["steps"] == 5
    forest = fit(small_data, "forest", n_templates=8, trees_per_round=4, max_rounds=2, training=training)
    assert forest["params"]["min_rounds"] == 3 and forest["params"]["patience"] == 1 and forest["budget"] is None
    assert cnn["params"]["min_epochs"] == 3
    # a hyperparameter the item sets wins over the run-wide setting; a fixed threshold is used as is
    fixed = fit(small_data, "cnn", channels=[8], epochs=2, training={**training, "threshold": 0.3})
    assert fixed["params"]["epochs"] == 2 and set(fixed["thresholds"].values()) == {0.3}
    with pytest.raises(ParameterError, match=r"training: unknown setting\(s\) \['lr'\]"):
        fit(small_data, "cnn", training={"lr": 0.1})


def test_the_ingested_data_goes_through_the_artifact_store_once(tmp_path):
    """The engine stores each array once and hands every branch read-only memory maps."""
    from fanflow.ml.sources import moving_digits
    from fanflow.stores.artifacts import ArtifactStore
    from fanflow.stores.values import decode, encode
    from fanflow.vocab.manifest import dumps

    store = ArtifactStore(tmp_path / "store")
    manifest = encode(moving_digits(seed=2, train=64, val=16, test=16, previews=1), store)
    assert len(dumps(manifest)) < 5000  # only references and a small report travel inline
    data = decode(manifest, store)
    assert isinstance(data["train"]["x"], np.memmap) and not data["train"]["x"].flags.writeable
    branches = [decode(manifest, store) for _ in range(2)]
    assert branches[0]["train"]["x"].filename == branches[1]["train"]["x"].filename  # the same file
    out = fit(data, "cnn_motion", params=TINY_CNN)
    back = decode(encode(out, store), store)
    assert load_model(back["model"]).predict_proba(data["test"]["x"]).shape == (16, 10)
    assert back["metrics"] == out["metrics"]
    assert np.array_equal(back["scores"]["test"], out["scores"]["test"])
