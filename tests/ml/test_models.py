"""Every model of the zoo follows the estimator contract."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from sklearn.base import clone

from fanflow.ml import DataError, ParameterError
from fanflow.ml.models import MODELS, load_model, make_model, save_model

from .helpers import TINY


def fitted(name, data, **extra):
    model = make_model(name, **{**TINY[name], **extra})
    return model.fit(data["train"]["x"], data["train"]["y"], validation=(data["val"]["x"], data["val"]["y"]),
                     tags=data["tags"])


@pytest.fixture(scope="module")
def trained(small_data):
    return {name: fitted(name, small_data) for name in MODELS}


def test_the_zoo_has_the_reference_cnns_and_classic_models():
    assert {"cnn", "cnn_dropout", "cnn_batchnorm", "logistic", "forest"} <= set(MODELS)
    families = {make_model(name).family for name in MODELS}
    assert {"torch-cnn", "sklearn-logistic", "sklearn-forest"} <= families


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameters_follow_the_scikit_learn_contract(name):
    model = make_model(name, seed=7)
    params = model.get_params()
    assert params["seed"] == 7
    for key, value in MODELS[name].defaults.items():
        assert params[key] == value
    twin = clone(model)
    assert twin.get_params() == params and twin is not model
    model.set_params(threshold=0.4)
    assert model.get_params()["threshold"] == 0.4
    assert not hasattr(model, "tags_")  # nothing is learnt before fit


def test_unknown_hyperparameters_and_models_are_clear_errors():
    with pytest.raises(ParameterError, match=r"cnn: unknown hyperparameter\(s\) 'learning_rate'; ClipCNN takes"):
        make_model("cnn", learning_rate=0.1)
    with pytest.raises(ParameterError, match="unknown model 'resnet'; known models: cnn, cnn_dropout"):
        make_model("resnet")
    with pytest.raises(ParameterError, match="frames: expected one of"):
        make_model("cnn", frames="first").fit(np.zeros((4, 2, 8, 8), np.uint8), np.zeros((4, 2)),
                                              validation=(np.zeros((2, 2, 8, 8), np.uint8), np.zeros((2, 2))))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_and_predict_proba(trained, small_data, name):
    model = trained[name]
    proba = model.predict_proba(small_data["test"]["x"])
    assert proba.shape == (80, 10) and proba.dtype == np.float32
    assert proba.min() >= 0.0 and proba.max() <= 1.0
    assert model.tags_ == small_data["tags"] and model.input_shape_ == (8, 32, 32) and model.threshold_ == 0.5
    assert len(model.thresholds_) == 10 and all(0 < t < 1 for t in model.thresholds_)
    assert np.array_equal(model.predict(small_data["test"]["x"]), (proba >= 0.5).astype(np.uint8))
    # the per-entity thresholds tuned on validation are where the raw probabilities emit
    raw = model._raw_proba(small_data["test"]["x"])
    assert np.array_equal(proba >= 0.5, raw >= np.array(model.thresholds_))
    # float clips in [0, 1] and uint8 clips are the same input
    as_float = np.asarray(small_data["test"]["x"][:5], dtype=np.float32) / 255
    assert np.allclose(model.predict_proba(as_float), proba[:5], atol=1e-5)
    with pytest.raises(DataError, match=r"clips of shape \(8, 16, 16\)"):
        model.predict_proba(np.zeros((2, 8, 16, 16), np.uint8))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_model(small_data, trained, name):
    a = trained[name]
    b = fitted(name, small_data)
    assert np.array_equal(a.predict_proba(small_data["val"]["x"]), b.predict_proba(small_data["val"]["x"]))
    c = fitted(name, small_data, seed=1)
    assert not np.array_equal(a.predict_proba(small_data["val"]["x"]), c.predict_proba(small_data["val"]["x"]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_and_load_give_identical_predictions(trained, small_data, tmp_path, name):
    model = trained[name]
    path = save_model(model, tmp_path / f"{name}.zip")
    again = load_model(path)
    x = small_data["test"]["x"]
    assert np.array_equal(model.predict_proba(x), again.predict_proba(x))
    assert again.get_params() == model.get_params()
    assert (again.tags_, again.input_shape_, again.threshold_) == (model.tags_, model.input_shape_, model.threshold_)
    assert again.thresholds_ == model.thresholds_
    if name.startswith("cnn"):  # the same weights save to the same bytes, so the hash identifies them
        assert save_model(again, tmp_path / "again.zip").read_bytes() == path.read_bytes()
    names = set(zipfile.ZipFile(path).namelist())
    assert names == ({"model.json", "weights.pt"} if name.startswith("cnn") else
                     {"model.json", "model.skops", "arrays.npz"})


def test_loading_refuses_pickled_objects_in_weights(trained, tmp_path):
    path = save_model(trained["cnn"], tmp_path / "cnn.zip")
    buffer = io.BytesIO()
    torch.save({"payload": zipfile.ZipInfo("x")}, buffer)  # an arbitrary object, not tensors
    rewrite(path, "weights.pt", buffer.getvalue())
    with pytest.raises(Exception, match="Weights only load failed"):
        load_model(path)


def test_loading_refuses_untrusted_types_in_skops(trained, tmp_path):
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer, MinMaxScaler

    path = save_model(trained["logistic"], tmp_path / "logistic.zip")
    rewrite(path, "model.skops", skops.io.dumps({"scaler": FunctionTransformer(func=os.system), "model": []}))
    with pytest.raises(DataError, match=r"types that are not trusted: \['posix.system'\]"):
        load_model(path)
    # types skops trusts on its own are still refused where the zoo never puts them
    rewrite(path, "model.skops", skops.io.dumps({"scaler": MinMaxScaler(), "model": []}))
    with pytest.raises(DataError, match="unexpected content"):
        load_model(path)


def rewrite(path, member, data):
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files[member] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.zip: no such model file"):
        load_model(tmp_path / "nope.zip")
    (tmp_path / "junk.zip").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"junk\.zip: not a fanflow model file"):
        load_model(tmp_path / "junk.zip")


def test_early_stopping_watches_the_validation_loss_and_keeps_the_best_epoch(small_data):
    # a learning rate this small leaves the loss flat: stop once warm-up, minimum and patience have passed
    model = fitted("cnn", small_data, lr=1e-9, epochs=20, warmup=0.1, patience=2, min_epochs=1)
    assert model.budget_.warmup_epochs == 2 and model.n_rounds_ == 3  # 2 warm-up + 1, then patience
    assert model.best_round_ == 1 and all("val_loss" in h for h in model.history_)
    # a working one keeps improving, and keeps the epoch with the lowest validation loss
    model = fitted("cnn_batchnorm", small_data, epochs=4)
    losses = [h["val_loss"] for h in model.history_]
    assert model.best_round_ == int(np.argmin(losses)) + 1
    forest = fitted("forest", small_data, max_rounds=8, patience=1)
    losses = [h["val_loss"] for h in forest.history_]
    assert forest.best_round_ == int(np.argmin(losses)) + 1
    assert len(forest.forest_.estimators_) == forest.best_round_ * 8


def test_no_model_collapses_to_predicting_nothing_on_sparse_tags(small_data):
    """An untrained network sits at the entities' prior (0.2 here), under 0.5 everywhere; the
    thresholds tuned on validation still make it tag (and so score above the empty predictor)."""
    model = fitted("cnn", small_data, epochs=1, lr=1e-9)
    x = small_data["test"]["x"]
    assert (model._raw_proba(x) >= 0.5).sum() == 0
    assert model.predict(x).sum() > 0 and model.score(x, small_data["test"]["y"]) > 0


def test_history_and_params_are_json(trained):
    for model in trained.values():
        json.dumps(model.history_)
        json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in model.get_params().items()})
