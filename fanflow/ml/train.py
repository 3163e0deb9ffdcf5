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


# Run-wide training settings a workflow passes to every branch (``training``), and the
# hyperparameter each one sets in a model that has it. The fan-out item's own params win.
TRAINING_SETTINGS = {
    "epochs": ("epochs",),
    "min_steps": ("min_steps",),
    "max_steps": ("max_steps",),
    "batch_size": ("batch_size",),
    "patience": ("patience",),
    "min_epochs": ("min_epochs", "min_rounds"),
    "threshold": ("threshold",),
    "thresholds": ("entity_thresholds",),
}


def _settings(model: str, training: dict | None) -> dict:
    """The hyperparameters that the run-wide ``training`` settings give ``model``."""
    if training is None:
        return {}
    if not isinstance(training, dict):
        raise ParameterError(f"training: expected a dict of settings, got {type(training).__name__}")
    unknown = sorted(set(training) - set(TRAINING_SETTINGS))
    if unknown:
        raise ParameterError(f"training: unknown setting(s) {unknown}; known: {', '.join(TRAINING_SETTINGS)}")
    accepted = MODELS[model].cls().get_params()
    out = {}
    for key, value in training.items():
        if key == "threshold" and not value:
            value = None  # 0: tune on validation
        if key == "min_epochs" and not value:
            continue  # 0: each model's own default
        if key == "thresholds":
            if value not in ("model", "entity"):
                raise ParameterError(f"training.thresholds: expected 'model' or 'entity', got {value!r}")
            value = value == "entity"
        for name in TRAINING_SETTINGS[key]:
            if name in accepted:
                out[name] = value
    return out


def fit(data: dict, model: str, params: dict | None = None, seed: int = 0, training: dict | None = None,
        **overrides) -> dict:
    """Train the zoo's ``model`` on ``data["train"]``, stopping early and tuning its
    thresholds on ``data["val"]``, then score validation and test, save the model and its card.

    Hyperparameters come as ``params`` (a dict, e.g. a fan-out item) and / or as keyword
    ``overrides``; any the model does not take is a :class:`ParameterError`. ``training``
    holds run-wide settings (``TRAINING_SETTINGS``: the step budget, early stopping, the
    threshold, 0 meaning tuned on validation, one per model or, with ``thresholds: entity``,
    one per entity) applied to every model that has them; a
    hyperparameter the item sets wins. Uses as many torch threads as cores the task was
    given, and a GPU when the task was given one. The result carries each split's scores
    (as ``predict_proba`` gives them), from which selection combines models.
    """
    import torch

    from fanflow.runtime import cpus, scratch_dir, task_name

    if not isinstance(model, str) or model not in MODELS:
        raise ParameterError(f"model: unknown model {model!r}; known models: {', '.join(MODELS)}")
    if params is not None and not isinstance(params, dict):
        raise ParameterError(f"params: expected a dict of hyperparameters, got {type(params).__name__}")
    hyper = {**(params or {}), **overrides}
    check_data(data)
    verbose = {"verbose": 1} if task_name() else {}
    estimator = make_model(model, **{"seed": seed, **verbose, **_settings(model, training), **hyper})
    name = candidate_name(model, hyper)
    threads = cpus()
    torch.set_num_threads(threads)

    tags = [str(t) for t in data["tags"]]
    start = time.perf_counter()
    estimator.fit(data["train"]["x"], data["train"]["y"],
                  validation=(data["val"]["x"], data["val"]["y"]), tags=tags)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    scores = {split: estimator.predict_proba(data[split]["x"]) for split in ("val", "test")}
    metrics = {split: evaluate(np.asarray(data[split]["y"]), scores[split], estimator.threshold_, tags)
               for split in ("val", "test")}
    score_seconds = time.perf_counter() - start

    out = Path(scratch_dir())
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    model_path = save_model(estimator, out / f"{stem}.model.zip")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    params_json = _plain(estimator.get_params())
    budget = getattr(estimator, "budget_", None)
    training_record = {
        "seconds": round(train_seconds, 3),
        "scoring_seconds": round(score_seconds, 3),
        "threads": threads,
        "device": getattr(estimator, "device_", "cpu"),
        "rounds": estimator.n_rounds_,
        "best_round": estimator.best_round_,
        "budget": None if budget is None else {"steps": budget.steps, "epochs": budget.epochs,
                                               "steps_per_epoch": budget.steps_per_epoch,
                                               "warmup_epochs": budget.warmup_epochs,
                                               "earliest_stop": budget.earliest_stop},
        "early_stopping": "validation loss",
        "history": _plain(estimator.history_),
    }
    card = {
        "name": name,
        "recipe": model,
        "family": estimator.family,
        "class": type(estimator).__name__,
        "summary": MODELS[model].summary,
        "params": params_json,
        "tags": tags,
        "input_shape": list(estimator.input_shape_),
        "thresholds": dict(zip(tags, estimator.thresholds_, strict=True)),
        "data": {k: v for k, v in (data.get("report") or {}).items() if k in ("source", "seed", "clips", "frames",
                                                                             "size", "tags")},
        "training": training_record,
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
        "scores": scores,
        "thresholds": card["thresholds"],
        "card": write_card(card, out, stem),
        "train_seconds": train_seconds,
        "rounds": estimator.n_rounds_,
        "best_round": estimator.best_round_,
        "budget": training_record["budget"],
        "threads": threads,
        "device": training_record["device"],
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
