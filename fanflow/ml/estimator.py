"""What every model of the zoo shares: the scikit-learn estimator contract for clips.

``fit(X, y, validation=(X_val, y_val), tags=...)`` learns from clips X (n, T, H, W), uint8
or float32 in [0, 1], and multi-hot tags y (n, K); ``predict_proba(X)`` returns (n, K)
probabilities and ``predict(X)`` the tags at ``threshold_``. Constructor arguments are the
hyperparameters and nothing happens in ``__init__``, so ``get_params``, ``set_params`` and
``sklearn.base.clone`` work, and a grid over any of them is a list of parameter dicts.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from fanflow.ml.errors import DataError, ParameterError
from fanflow.ml.metrics import jaccard


class ClipTagger(BaseEstimator):
    """Base of the zoo. Fitted attributes: ``tags_`` (entity names), ``input_shape_``
    (T, H, W), ``threshold_``, ``history_`` (one dict per epoch or round), ``best_round_``."""

    family = "clip"

    def predict_proba(self, X) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X) >= self.threshold_).astype(np.uint8)

    # Helpers for subclasses.

    def _check_fit_inputs(self, X, y, validation, tags):
        X = _as_clips(X, "X")
        y = np.asarray(y)
        if y.ndim != 2 or len(y) != len(X):
            raise DataError(f"y: expected multi-hot tags (n, K) for {len(X)} clips, got shape {y.shape}")
        if validation is None:
            raise ParameterError("validation: early stopping needs validation clips, pass (X_val, y_val)")
        X_val, y_val = _as_clips(validation[0], "X_val"), np.asarray(validation[1])
        if X_val.shape[1:] != X.shape[1:] or y_val.shape[1:] != y.shape[1:] or len(X_val) != len(y_val):
            raise DataError(
                f"validation: clips {X_val.shape} / tags {y_val.shape} do not match the training "
                f"clips {X.shape} / tags {y.shape}"
            )
        tags = [str(t) for t in tags] if tags is not None else [str(k) for k in range(y.shape[1])]
        if len(tags) != y.shape[1]:
            raise DataError(f"tags: {len(tags)} names for {y.shape[1]} tag columns")
        self.tags_ = tags
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
        self.threshold_ = float(getattr(self, "threshold", 0.5))
        if not 0.0 < self.threshold_ < 1.0:
            raise ParameterError(f"threshold: expected a probability in (0, 1), got {self.threshold_!r}")
        return X, y.astype(np.float32), X_val, y_val.astype(np.float32)

    def _check_predict_input(self, X) -> np.ndarray:
        if not hasattr(self, "input_shape_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit first")
        X = _as_clips(X, "X")
        if tuple(X.shape[1:]) != tuple(self.input_shape_):
            raise DataError(
                f"X: clips of shape {tuple(X.shape[1:])}, but the model was trained on "
                f"{tuple(self.input_shape_)} (frames, height, width)"
            )
        return X

    @staticmethod
    def _val_score(y_val: np.ndarray, proba: np.ndarray, threshold: float) -> float:
        return jaccard(y_val, proba >= threshold)


def _as_clips(X, name: str) -> np.ndarray:
    X = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if X.ndim != 4:
        raise DataError(f"{name}: expected clips (n, frames, height, width), got shape {X.shape}")
    if X.dtype != np.uint8 and X.dtype.kind != "f":
        raise DataError(f"{name}: expected uint8 or float clips, got {X.dtype}")
    return X


def unit_batch(X: np.ndarray) -> np.ndarray:
    """A batch of clips as float32 in [0, 1] (uint8 is divided by 255)."""
    if X.dtype == np.uint8:
        return X.astype(np.float32) * np.float32(1 / 255)
    return np.clip(X.astype(np.float32, copy=False), 0.0, 1.0)
