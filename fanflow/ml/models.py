"""The model zoo: a registry of named recipes, and saving / loading fitted models safely.

A saved model is one zip file holding ``model.json`` (class, hyperparameters, entity names,
input shape, threshold, training history) and the fitted state: ``weights.pt``, a torch
state dict read back with ``torch.load(weights_only=True)``, or ``model.skops`` (the
scikit-learn objects, read back by skops trusting an explicit list of types) with
``arrays.npz`` (plain arrays, no pickle). Nothing is ever unpickled.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fanflow.ml.classic import TemplateForest, TemplateLogistic
from fanflow.ml.cnn import ClipCNN
from fanflow.ml.errors import DataError, ParameterError
from fanflow.ml.estimator import ClipTagger

FORMAT = "fanflow.ml.model/2"


@dataclass(frozen=True)
class Recipe:
    """A named model: an estimator class and the hyperparameters that differ from its defaults."""

    cls: type
    defaults: dict = field(default_factory=dict)
    summary: str = ""


MODELS: dict[str, Recipe] = {
    "cnn": Recipe(ClipCNN, {}, "plain frame-wise CNN (3×3 convolutions 16-32-64), max over space and time"),
    "cnn_dropout": Recipe(ClipCNN, {"dropout": 0.1}, "the plain CNN with 2D dropout 0.1 and head dropout 0.2"),
    "cnn_batchnorm": Recipe(ClipCNN, {"batchnorm": True, "lr": 1e-2},
                            "the plain CNN with batch normalisation after every convolution"),
    "cnn_wide": Recipe(ClipCNN, {"batchnorm": True, "lr": 1e-2, "kernel": 5},
                       "batch-norm CNN with 5×5 kernels: a wider receptive field"),
    "cnn_motion": Recipe(ClipCNN, {"batchnorm": True, "lr": 1e-2, "motion": True},
                         "batch-norm CNN that also sees each frame's difference to the previous one"),
    "cnn_wide_motion": Recipe(ClipCNN, {"batchnorm": True, "lr": 1e-2, "kernel": 5, "motion": True},
                              "the wide CNN that also sees each frame's difference to the previous one"),
    "cnn_even": Recipe(ClipCNN, {"batchnorm": True, "lr": 1e-2, "frames": "even"},
                       "batch-norm CNN that sees only the even frames"),
    "cnn_odd": Recipe(ClipCNN, {"batchnorm": True, "lr": 1e-2, "frames": "odd"},
                      "batch-norm CNN that sees only the odd frames"),
    "logistic": Recipe(TemplateLogistic, {}, "logistic regression per entity on template-match features"),
    "forest": Recipe(TemplateForest, {}, "extremely randomised trees on template-match features"),
}

# The default training fan-out: models that see the clips differently (all frames; frames and
# their differences; even frames; odd frames; template matches), so that selection can find
# a pair whose mistakes differ. docs/ml.md gives the measurements behind the choice.
REFERENCE_ZOO = ["cnn_wide", "cnn_wide_motion", "cnn_even", "cnn_odd", "logistic"]

_CLASSES = {cls.__name__: cls for cls in (ClipCNN, TemplateLogistic, TemplateForest)}

# Types that skops does not trust by itself and that a saved classic model may hold. Loading
# refuses a file holding any other untrusted type. (skops trusts scikit-learn's estimators,
# NumPy arrays and builtins on its own.)
TRUSTED_SKOPS_TYPES = ["sklearn.tree._tree.Tree"]


def make_model(name: str, **params) -> ClipTagger:
    """A fresh estimator of the named recipe, with ``params`` overriding its defaults."""
    if name not in MODELS:
        raise ParameterError(f"model: unknown model {name!r}; known models: {', '.join(MODELS)}")
    recipe = MODELS[name]
    allowed = recipe.cls().get_params()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(
            f"{name}: unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"{recipe.cls.__name__} takes {', '.join(sorted(allowed))}"
        )
    return recipe.cls(**{**recipe.defaults, **params})


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_model(estimator: ClipTagger, path: str | Path) -> Path:
    """Write a fitted estimator to ``path`` (a zip file; see the module's docstring)."""
    path = Path(path)
    if not hasattr(estimator, "input_shape_"):
        raise ValueError(f"{type(estimator).__name__} is not fitted; nothing to save")
    meta = {
        "format": FORMAT,
        "class": type(estimator).__name__,
        "family": estimator.family,
        "params": _jsonable(estimator.get_params()),
        "tags": list(estimator.tags_),
        "input_shape": list(estimator.input_shape_),
        "threshold": float(estimator.threshold_),
        "thresholds": [float(t) for t in estimator.thresholds_],
        "best_round": int(estimator.best_round_),
        "rounds": int(estimator.n_rounds_),
        "history": _jsonable(estimator.history_),
    }
    # fixed timestamps keep the file, and so its hash, the same for the same model
    def add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
        zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)

    with zipfile.ZipFile(path, "w") as zf:
        add(zf, "model.json", json.dumps(meta, indent=1, sort_keys=True).encode())
        if isinstance(estimator, ClipCNN):
            import torch

            buffer = io.BytesIO()
            torch.save(estimator.state_tensors(), buffer)
            add(zf, "weights.pt", buffer.getvalue())
        else:
            import skops.io

            add(zf, "model.skops", skops.io.dumps(estimator.sklearn_parts()))
            buffer = io.BytesIO()
            np.savez(buffer, templates=estimator.templates_)
            add(zf, "arrays.npz", buffer.getvalue())
    return path


def load_model(path: str | Path) -> ClipTagger:
    """Read a model written by :func:`save_model`; only the zoo's classes and the trusted
    types are ever rebuilt."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("model.json"))
            files = {name: zf.read(name) for name in zf.namelist() if name != "model.json"}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a fanflow model file ({e})") from None
    if meta.get("format") != FORMAT or meta.get("class") not in _CLASSES:
        raise DataError(f"{path}: unknown model format {meta.get('format')!r} / class {meta.get('class')!r}")
    cls = _CLASSES[meta["class"]]
    needed = {"weights.pt"} if cls is ClipCNN else {"model.skops", "arrays.npz"}
    if not needed <= set(files):
        raise DataError(f"{path}: incomplete model file, expected {sorted(needed)} beside model.json")
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
    if len(meta.get("thresholds", ())) != len(meta["tags"]):
        raise DataError(f"{path}: expected one threshold per entity in model.json")
    estimator = cls(**params)
    estimator.tags_ = list(meta["tags"])
    estimator.input_shape_ = tuple(meta["input_shape"])
    estimator.threshold_ = float(meta["threshold"])
    estimator.thresholds_ = [float(t) for t in meta["thresholds"]]
    estimator.best_round_ = meta["best_round"]
    estimator.n_rounds_ = meta["rounds"]
    estimator.history_ = meta["history"]
    if isinstance(estimator, ClipCNN):
        import torch

        state = torch.load(io.BytesIO(files["weights.pt"]), map_location="cpu", weights_only=True)
        estimator.load_state_tensors(state)
    else:
        import skops.io

        data = files["model.skops"]
        untrusted = set(skops.io.get_untrusted_types(data=data))
        unexpected = sorted(untrusted - set(TRUSTED_SKOPS_TYPES))
        if unexpected:
            raise DataError(f"{path}: the model holds types that are not trusted: {unexpected}")
        parts = skops.io.loads(data, trusted=TRUSTED_SKOPS_TYPES)
        with np.load(io.BytesIO(files["arrays.npz"]), allow_pickle=False) as arrays:
            try:
                estimator.load_sklearn_parts(parts, {k: arrays[k] for k in arrays.files})
            except DataError as e:
                raise DataError(f"{path}: {e}") from None
    return estimator
