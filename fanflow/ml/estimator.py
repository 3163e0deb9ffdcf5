"""What every model of the zoo shares: the scikit-learn estimator contract for clips.

``fit(X, y)`` learns from clips X (n, T, H, W), uint8 or float32 in [0, 1], and multi-hot
tags y (n, K). Early stopping and the decision thresholds need validation clips: pass them
as ``fit(X, y, validation=(X_val, y_val))``, or let ``fit`` hold out ``validation_fraction``
of X (a constructor argument, so ``GridSearchCV`` and ``cross_val_score`` work unchanged).
``predict_proba(X)`` returns (n, K) scores, already shifted so that each entity's threshold
tuned on validation sits at 0.5 (see ``thresholds``); ``predict(X)`` returns the tags, and
``score(X, y)`` the example-based (Jaccard) accuracy. Constructor arguments are the
hyperparameters and nothing happens in ``__init__``, so ``get_params``, ``set_params`` and
``sklearn.base.clone`` work, and a grid over any of them is a list of parameter dicts.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from fanflow.ml.errors import DataError, ParameterError
from fanflow.ml.metrics import jaccard
from fanflow.ml.thresholds import align, tune

DECISION = 0.5  # every model's scores reach this where it emits a tag


class ClipTagger(BaseEstimator):
    """Base of the zoo. Subclasses implement ``_fit_model`` and ``_raw_proba``.

    Fitted attributes: ``tags_`` (entity names), ``input_shape_`` (T, H, W),
    ``thresholds_`` (one per entity, on the raw probabilities: tuned on validation, the same
    for every entity unless ``entity_thresholds``), ``threshold_`` (0.5: where
    the scores of ``predict_proba`` emit a tag), ``history_`` (one dict per epoch or round),
    ``best_round_``, ``n_rounds_``.
    """

    family = "clip"

    # ------------------------------------------------------------------ the contract

    def fit(self, X, y, validation=None, tags=None):
        """Learn from clips ``X`` and tags ``y``; stop early and tune thresholds on
        ``validation`` = (X_val, y_val), or on ``validation_fraction`` of X when None."""
        self._check_params()
        X, y, X_val, y_val = self._check_fit_inputs(X, y, validation, tags)
        self._fit_model(X, y, X_val, y_val)
        self._set_thresholds(y_val, self._raw_proba(X_val))
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._check_predict_input(X)
        return align(self._raw_proba(X), np.asarray(self.thresholds_))

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X) >= self.threshold_).astype(np.uint8)

    def score(self, X, y) -> float:
        """Example-based (Jaccard) accuracy of the predicted tags."""
        return jaccard(np.asarray(y), self.predict(X))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "thresholds_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.input_tags.two_d_array = False  # clips are (n, frames, height, width)
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ for subclasses

    def _check_params(self) -> None:
        """Raise ParameterError for a hyperparameter that cannot be used."""

    def _fit_model(self, X, y, X_val, y_val) -> None:
        raise NotImplementedError

    def _raw_proba(self, X) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _check_fit_inputs(self, X, y, validation, tags):
        X = _as_clips(X, "X")
        if len(X) == 0:
            raise DataError(f"X: no clips to learn from (shape {X.shape})")
        y = np.asarray(y)
        if y.ndim != 2 or len(y) != len(X):
            raise DataError(f"y: expected multi-hot tags (n, K) for {len(X)} clips, got shape {y.shape}")
        if validation is None:
            X, y, X_val, y_val = self._hold_out(X, y)
        else:
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
        return X, y.astype(np.float32), X_val, y_val.astype(np.float32)

    def _hold_out(self, X, y):
        fraction = getattr(self, "validation_fraction", 0.15)
        if not 0.0 < fraction < 1.0:
            raise ParameterError(f"validation_fraction: expected a fraction in (0, 1), got {fraction!r}")
        n_val = round(len(X) * fraction)
        if n_val < 1 or n_val >= len(X):
            raise DataError(f"X: {len(X)} clip(s) are too few to hold out a validation fraction of {fraction}")
        order = np.random.default_rng(self.seed).permutation(len(X))
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        return X[train], y[train], X[val], y[val]

    def _set_thresholds(self, y_val, raw_val) -> None:
        k = len(self.tags_)
        fixed = getattr(self, "threshold", None)
        if fixed is None:
            tuned = tune(np.asarray(y_val), raw_val, per_entity=bool(getattr(self, "entity_thresholds", False)))
            self.thresholds_ = tuned["per_entity"]
        else:
            if not 0.0 < float(fixed) < 1.0:
                raise ParameterError(f"threshold: expected a probability in (0, 1) or None, got {fixed!r}")
            self.thresholds_ = [float(fixed)] * k
        self.threshold_ = DECISION

    def _check_predict_input(self, X) -> np.ndarray:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")
        X = _as_clips(X, "X")
        if tuple(X.shape[1:]) != tuple(self.input_shape_):
            raise DataError(
                f"X: clips of shape {tuple(X.shape[1:])}, but the model was trained on "
                f"{tuple(self.input_shape_)} (frames, height, width)"
            )
        return X


def _as_clips(X, name: str) -> np.ndarray:
    X = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if X.ndim != 4:
        raise DataError(f"{name}: expected clips (n, frames, height, width), got shape {X.shape}")
    if X.dtype != np.uint8 and X.dtype.kind != "f":
        raise DataError(f"{name}: expected uint8 or float clips, got {X.dtype}")
    return X
