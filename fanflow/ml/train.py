"""The training step: one model of the zoo, fitted on the shared ingested data."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np

from fanflow.ml.cards import write_card
from fanflow.ml.errors import DataError, ParameterError
from fanflow.ml.metrics import evaluate
from fanflow.ml.models import MODELS, make_model, save_model


def candidate_name(model: str, hyper: dict) -> str:
    """``cnn`` or ``cnn[lr=0.01,max_epochs=4]``: unique per fan-out item, stable in order."""
    if not hyper:
        return model
    return f"{model}[{','.join(f'{k}={_short(v)}' for k, v in sorted(hyper.items()))}]"


def _short(value) -> str:
    if isinstance(value, list | tuple):
        return "-".join(_short(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_data(data) -> None:
    """A clear error when ``data`` is not what a source step returns."""
    if not isinstance(data, dict):
        raise DataError(f"data: expected the result of an ingest step (a dict), got {type(data).__name__}")
    for split in ("train", "val", "test"):
        part = data.get(split)
        if not isinstance(part, dict) or "x" not in part or "y" not in part:
            raise DataError(f"data.{split}: expected {{'x': clips, 'y': tags}}, got {type(part).__name__}")
        x, y = part["x"], part["y"]
        if getattr(x, "ndim", 0) != 4 or getattr(y, "ndim", 0) != 2 or len(x) != len(y) or len(x) == 0:
            raise DataError(f"data.{split}: expected x (n, T, H, W) and y (n, K) with n > 0, got "
                            f"{getattr(x, 'shape', '?')} and {getattr(y, 'shape', '?')}")
    if "tags" not in data or len(data["tags"]) != data["train"]["y"].shape[1]:
        raise DataError("data.tags: expected one entity name per column of y")


def fit(data: dict, model: str, params: dict | None = None, seed: int = 0, epochs: int = 0,
        **overrides) -> dict:
    """Train the zoo's ``model`` on ``data["train"]``, stopping early on ``data["val"]``, then
    score validation and test, save the model and its card.

    Hyperparameters come as ``params`` (a dict, e.g. a fan-out item) and / or as keyword
    ``overrides``; any the model does not take is a :class:`ParameterError`. ``epochs`` > 0
    caps the training budget of every model alike (a CNN's ``max_epochs``, a classic model's
    ``max_rounds``); 0 keeps each model's own. Uses as many torch threads as cores the task
    was given, and a GPU when the task was given one.
    """
    import torch

    from fanflow.runtime import cpus, scratch_dir

    if not isinstance(model, str) or model not in MODELS:
        raise ParameterError(f"model: unknown model {model!r}; known models: {', '.join(MODELS)}")
    if params is not None and not isinstance(params, dict):
        raise ParameterError(f"params: expected a dict of hyperparameters, got {type(params).__name__}")
    hyper = {**(params or {}), **overrides}
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ParameterError(f"epochs: expected an integer >= 0 (0 keeps each model's own), got {epochs!r}")
    check_data(data)
    budget = {}
    if epochs:
        budget = {"max_epochs" if "max_epochs" in MODELS[model].cls().get_params() else "max_rounds": epochs}
    estimator = make_model(model, **{"seed": seed, **budget, **hyper})
    name = candidate_name(model, hyper)
    threads = cpus()
    torch.set_num_threads(threads)

    tags = [str(t) for t in data["tags"]]
    start = time.perf_counter()
    estimator.fit(data["train"]["x"], data["train"]["y"],
                  validation=(data["val"]["x"], data["val"]["y"]), tags=tags)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    metrics = {
        split: evaluate(np.asarray(data[split]["y"]), estimator.predict_proba(data[split]["x"]),
                        estimator.threshold_, tags)
        for split in ("val", "test")
    }
    score_seconds = time.perf_counter() - start

    out = Path(scratch_dir())
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    model_path = save_model(estimator, out / f"{stem}.model.zip")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    params_json = _plain(estimator.get_params())
    card = {
        "name": name,
        "recipe": model,
        "family": estimator.family,
        "class": type(estimator).__name__,
        "summary": MODELS[model].summary,
        "params": params_json,
        "tags": tags,
        "input_shape": list(estimator.input_shape_),
        "threshold": estimator.threshold_,
        "data": {k: v for k, v in (data.get("report") or {}).items() if k in ("source", "seed", "clips", "frames",
                                                                             "size", "tags")},
        "training": {
            "seconds": round(train_seconds, 3),
            "scoring_seconds": round(score_seconds, 3),
            "threads": threads,
            "device": getattr(estimator, "device_", "cpu"),
            "rounds": estimator.n_rounds_,
            "best_round": estimator.best_round_,
            "history": _plain(estimator.history_),
        },
        "metrics": metrics,
        "artifact": {"file": model_path.name, "sha256": f"sha256:{digest}", "bytes": model_path.stat().st_size},
    }
    return {
        "name": name,
        "recipe": model,
        "family": estimator.family,
        "params": params_json,
        "model": model_path,
        "metrics": metrics,
        "card": write_card(card, out, stem),
        "train_seconds": train_seconds,
        "threads": threads,
        "device": card["training"]["device"],
        "model_sha256": f"sha256:{digest}",
    }


def _plain(value):
    """JSON-ready copy (tuples to lists, NumPy scalars to Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
