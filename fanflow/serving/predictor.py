"""The predictor a model server serves, and how it is loaded.

A predictor is a fitted estimator with ``predict_proba(X) -> (n, K)`` for X float32
(n, T, H, W) in [0, 1], and the attributes ``tags_`` (the K tag names), ``input_shape_``
((T, H, W)) and ``threshold_`` (a tag is emitted when its score is at least this).

A model file is taken from the artifact store by hash: its bytes are hashed again and must
match before the loader reads them (``fanflow.ml.models:load_model`` unless another loader
is given); nothing is ever unpickled without that check.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fanflow.stores.artifacts import DIGEST_PREFIX, ArtifactPath, ArtifactStore, sha256_file

DEFAULT_LOADER = "fanflow.ml.models:load_model"


class Predictor(Protocol):
    tags_: list[str]
    input_shape_: tuple[int, int, int]
    threshold_: float

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LoadedModel:
    predictor: Predictor
    tags: tuple[str, ...]
    input_shape: tuple[int, int, int]
    threshold: float
    version: str | None = None  # the first 12 hex digits of the model file's sha256

    def predict(self, clips: np.ndarray) -> np.ndarray:
        """Scores (n, K) as float32; a predictor that answers anything else is a bug."""
        scores = np.asarray(self.predictor.predict_proba(clips), dtype=np.float32)
        expected = (len(clips), len(self.tags))
        if scores.shape != expected:
            raise RuntimeError(f"predict_proba returned shape {scores.shape}, expected {expected}")
        if not np.isfinite(scores).all():
            raise RuntimeError("predict_proba returned scores that are not finite")
        return scores


def check_predictor(predictor: Any, version: str | None = None) -> LoadedModel:
    """Check that ``predictor`` keeps the contract, and describe it."""
    if not callable(getattr(predictor, "predict_proba", None)):
        raise TypeError(f"{type(predictor).__name__} has no predict_proba(X)")
    try:
        tags = tuple(predictor.tags_)
        shape = tuple(int(d) for d in predictor.input_shape_)
        threshold = float(predictor.threshold_)
    except (AttributeError, TypeError, ValueError) as e:
        raise TypeError(f"{type(predictor).__name__} lacks a fitted predictor's attributes: {e}") from None
    if not tags or not all(isinstance(t, str) and t for t in tags) or len(set(tags)) != len(tags):
        raise TypeError(f"tags_ must be distinct non-empty strings, got {list(tags)!r}")
    if len(shape) != 3 or min(shape) < 1:
        raise TypeError(f"input_shape_ must be (T, H, W) of positive sizes, got {shape!r}")
    if not math.isfinite(threshold):
        raise TypeError(f"threshold_ must be a finite number, got {threshold!r}")
    return LoadedModel(predictor, tags, shape, threshold, version)  # type: ignore[arg-type]


def model_name(model: Any, name: str | None = None) -> str:
    """The name a model is served under: ``name``, else one made from a candidate's
    ``"name"`` (``served_name``), else "model"."""
    if name:
        return name
    candidate = candidate_name(model)
    return served_name(candidate) if candidate is not None else "model"


def candidate_name(model: Any) -> str | None:
    """A selected candidate's full name (``cnn_batchnorm[max_epochs=24,patience=24]``)."""
    if isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"]:
        return model["name"]
    return None


def served_name(candidate: str) -> str:
    """A model name for URLs made from a candidate's name: the name itself when it is one
    already (letters, digits, ``_ . -``), else its runs of other characters replaced by
    ``_`` and a short hash of the full name added, so that distinct candidates stay
    distinct: ``cnn_batchnorm[max_epochs=24,patience=24]`` →
    ``cnn_batchnorm_max_epochs_24_patience_24-0b77eb3b``."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}", candidate):
        return candidate
    readable = re.sub(r"[^A-Za-z0-9_.\-]+", "_", candidate).strip("_.-")[:180] or "model"
    return f"{readable}-{hashlib.sha256(candidate.encode()).hexdigest()[:8]}"


def parse_artifact(ref: str) -> tuple[str, str]:
    """``"sha256:HEX.suffix"`` → ``("sha256:HEX", ".suffix")``."""
    if not ref.startswith(DIGEST_PREFIX):
        raise ValueError(f"an artifact is named sha256:HEX[.suffix], got {ref!r}")
    body = ref.removeprefix(DIGEST_PREFIX)
    return DIGEST_PREFIX + body[:64], body[64:]


def resolve_model_file(model: Any, store: ArtifactStore | str | os.PathLike | None = None) -> Path:
    """The local path of a model file, its bytes checked against the hash it is known by.

    ``model`` is a selected candidate (a dict whose ``"model"`` is the file), an
    :class:`ArtifactPath` (verified), an artifact reference (``"sha256:HEX.suffix"`` or a
    manifest's ``{"$artifact": ..., "suffix": ...}``; needs ``store``), or a plain path.
    """
    if isinstance(model, dict) and "model" in model:
        return resolve_model_file(model["model"], store)
    if isinstance(model, ArtifactPath):
        return model.verify()
    ref = None
    if isinstance(model, dict) and "$artifact" in model:
        ref = (model["$artifact"], model.get("suffix", ""))
    elif isinstance(model, str) and model.startswith(DIGEST_PREFIX):
        ref = parse_artifact(model)
    if ref is not None:
        if store is None:
            raise ValueError(f"model {ref[0]} is an artifact reference: give the artifact store")
        if not isinstance(store, ArtifactStore):
            store = ArtifactStore(store)
        return store.path(ref[0], ref[1], verify=True)
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return path
    raise TypeError(f"cannot serve a {type(model).__name__}: give a predictor, a model file or a candidate")


def import_object(spec: str) -> Any:
    """``"package.module:attribute"`` → the attribute."""
    module, _, attribute = spec.partition(":")
    if not module or not attribute:
        raise ValueError(f"expected 'module:attribute', got {spec!r}")
    return getattr(importlib.import_module(module), attribute)


def load_model(
    model: Any,
    *,
    loader: Callable[[Path], Any] | str | None = None,
    store: ArtifactStore | str | os.PathLike | None = None,
    torch_threads: int | None = 1,
) -> LoadedModel:
    """Load what ``model`` names (see ``resolve_model_file``), or take a predictor as it is."""
    if callable(getattr(model, "predict_proba", None)):
        loaded = check_predictor(model)
    else:
        path = resolve_model_file(model, store)
        digest = getattr(path, "digest", None) or sha256_file(path)
        load = (
            import_object(loader or DEFAULT_LOADER) if loader is None or isinstance(loader, str) else loader
        )
        loaded = check_predictor(load(path), version=digest.removeprefix(DIGEST_PREFIX)[:12])
    if torch_threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(torch_threads)
    return loaded
