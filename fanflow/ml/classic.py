"""Classic scikit-learn models on translation-invariant features of pooled frames.

Flattened pixels do not work on moving digits (a digit is never in the same place twice),
so each clip is described by how well each of ``n_templates`` ink patterns matches it
anywhere and at any time: the templates are k-means centres of the inkiest patches of the
training frames, and a clip's features are the normalised cross-correlation of every frame
with every template, max-pooled over space and then pooled over frames (max and mean). A
scikit-learn classifier maps the features to tags.

Both models stop early on the validation clips: logistic regression adds solver iterations
round by round (warm start) and the forest adds trees, each keeping the round with the lowest
validation loss (threshold-free, like the CNNs').
"""

from __future__ import annotations

import warnings

import numpy as np

from fanflow.ml.budget import EarlyStopping, Progress
from fanflow.ml.errors import DataError, ParameterError
from fanflow.ml.estimator import ClipTagger
from fanflow.ml.metrics import jaccard, log_loss
from fanflow.ml.video import to_unit

PATCH = 8


def _extract_templates(X: np.ndarray, n_templates: int, rng: np.random.Generator) -> np.ndarray:
    """k-means centres (n_templates, PATCH, PATCH) of the inkiest patch of random frames,
    each centred and scaled to unit norm."""
    from sklearn.cluster import MiniBatchKMeans

    n, t = X.shape[:2]
    count = min(n * t, max(40 * n_templates, 2000))
    clips, frames = rng.integers(0, n, count), rng.integers(0, t, count)
    patches = []
    for i, f in zip(clips, frames, strict=True):
        frame = to_unit(np.asarray(X[i, f]))
        # box sums of every PATCH×PATCH window through an integral image
        s = np.pad(frame, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        box = s[PATCH:, PATCH:] - s[:-PATCH, PATCH:] - s[PATCH:, :-PATCH] + s[:-PATCH, :-PATCH]
        r, c = np.unravel_index(np.argmax(box), box.shape)
        patches.append(frame[r : r + PATCH, c : c + PATCH].ravel())
    patches = np.asarray(patches)
    patches = _normalise(patches)
    k = min(n_templates, len(patches))
    km = MiniBatchKMeans(n_clusters=k, random_state=int(rng.integers(2**31)), n_init=3, batch_size=1024)
    km.fit(patches)
    return _normalise(km.cluster_centers_).reshape(k, PATCH, PATCH).astype(np.float32)


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def template_features(X: np.ndarray, templates: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(n, 2 * n_templates): per template, the max over time and the mean over time of the
    best normalised correlation anywhere in the frame."""
    import torch
    import torch.nn.functional as F

    k = len(templates)
    weight = torch.from_numpy(np.ascontiguousarray(templates)).unsqueeze(1)  # (k, 1, P, P)
    ones = torch.ones(1, 1, PATCH, PATCH)
    out = np.empty((len(X), 2 * k), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            xb = torch.from_numpy(to_unit(np.asarray(X[start : start + batch_size])))
            b, t, h, w = xb.shape
            frames = xb.reshape(b * t, 1, h, w)
            # templates are zero-mean, so <window, template> = <window - mean, template>
            dot = F.conv2d(frames, weight)
            s1 = F.conv2d(frames, ones)
            s2 = F.conv2d(frames * frames, ones)
            energy = (s2 - s1 * s1 / PATCH**2).clamp_min(1e-3)
            corr = dot / energy.sqrt()
            best = corr.amax(dim=(2, 3)).reshape(b, t, k)
            out[start : start + b, :k] = best.amax(dim=1).numpy()
            out[start : start + b, k:] = best.mean(dim=1).numpy()
    return out


class _TemplateModel(ClipTagger):
    """Shared plumbing: templates, feature scaling, round-by-round early stopping."""

    def _check_common(self) -> None:
        for name, low in (("n_templates", 1), ("max_rounds", 1), ("patience", 1), ("min_rounds", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ParameterError(f"{name}: expected an integer >= {low}, got {value!r}")

    def _fit_model(self, X, y, X_val, y_val) -> None:
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(self.seed)
        self.templates_ = _extract_templates(X, self.n_templates, rng)
        f_train = template_features(X, self.templates_)
        self.scaler_ = StandardScaler().fit(f_train)
        f_train = self.scaler_.transform(f_train)
        f_val = self.scaler_.transform(template_features(X_val, self.templates_))
        y_int = y.astype(np.int64)

        self.history_ = []
        stopper = EarlyStopping(self.patience, self.min_rounds)
        progress = Progress(type(self).__name__, self.max_rounds, f"at most {self.max_rounds} rounds",
                            unit="round", enabled=bool(self.verbose))
        best = None
        for round_ in range(1, self.max_rounds + 1):
            self._grow(f_train, y_int, round_)
            proba = self._proba(f_val)
            loss = log_loss(y_val, proba)
            score = jaccard(y_val, proba >= 0.5)
            improved, stop = stopper.update(round_, loss)
            self.history_.append({"round": round_, "val_loss": loss, "val_jaccard_at_half": score})
            if improved:
                best = self._snapshot()
            progress.round(round_, loss, improved, val_score=score)
            if stop:
                progress.stopped(round_, stopper.best_epoch)
                break
        self._restore(best)
        self.best_round_ = stopper.best_epoch
        self.n_rounds_ = len(self.history_)

    def _raw_proba(self, X) -> np.ndarray:
        return self._proba(self.scaler_.transform(template_features(X, self.templates_)))

    # persistence: what goes through skops, and what is a plain array
    def sklearn_parts(self) -> dict:
        return {"scaler": self.scaler_, "model": self._model_object()}

    def load_sklearn_parts(self, parts: dict, arrays: dict) -> None:
        from sklearn.preprocessing import StandardScaler

        if not (isinstance(parts, dict) and isinstance(parts.get("scaler"), StandardScaler)
                and self._is_model_object(parts.get("model")) and "templates" in arrays):
            raise DataError(f"unexpected content for a {type(self).__name__}")
        self.scaler_ = parts["scaler"]
        self._set_model_object(parts["model"])
        self.templates_ = arrays["templates"]


class TemplateLogistic(_TemplateModel):
    """One L2-regularised logistic regression per entity on the template features."""

    family = "sklearn-logistic"

    def __init__(self, n_templates: int = 64, C: float = 0.1, iterations_per_round: int = 10,
                 max_rounds: int = 20, patience: int = 2, min_rounds: int = 1, threshold: float | None = None,
                 entity_thresholds: bool = False, validation_fraction: float = 0.15, seed: int = 0,
                 verbose: int = 0):
        self.n_templates = n_templates
        self.C = C
        self.iterations_per_round = iterations_per_round
        self.max_rounds = max_rounds
        self.patience = patience
        self.min_rounds = min_rounds
        self.threshold = threshold
        self.entity_thresholds = entity_thresholds
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.verbose = verbose

    def _check_params(self) -> None:
        self._check_common()
        if not self.C > 0:
            raise ParameterError(f"C: expected a positive inverse regularisation strength, got {self.C!r}")

    def _grow(self, f, y, round_):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        if round_ == 1:
            # an entity that is always (or never) present gets a constant instead of a model
            self.heads_ = [
                LogisticRegression(C=self.C, max_iter=self.iterations_per_round, warm_start=True)
                if y[:, k].min() != y[:, k].max() else float(y[0, k])
                for k in range(y.shape[1])
            ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for k, head in enumerate(self.heads_):
                if not isinstance(head, float):
                    head.fit(f, y[:, k])

    def _proba(self, f) -> np.ndarray:
        cols = [np.full(len(f), head) if isinstance(head, float) else head.predict_proba(f)[:, 1]
                for head in self.heads_]
        return np.stack(cols, axis=1).astype(np.float32)

    def _snapshot(self):
        return [None if isinstance(h, float) else (h.coef_.copy(), h.intercept_.copy()) for h in self.heads_]

    def _restore(self, snapshot) -> None:
        for head, saved in zip(self.heads_, snapshot, strict=True):
            if saved is not None:
                head.coef_, head.intercept_ = saved

    def _model_object(self):
        return self.heads_

    def _is_model_object(self, obj) -> bool:
        from sklearn.linear_model import LogisticRegression

        return (isinstance(obj, list) and len(obj) == len(self.tags_)
                and all(isinstance(h, LogisticRegression | float) for h in obj))

    def _set_model_object(self, obj) -> None:
        self.heads_ = list(obj)


class TemplateForest(_TemplateModel):
    """A multi-output extremely-randomised forest on the template features, grown
    ``trees_per_round`` trees at a time."""

    family = "sklearn-forest"

    def __init__(self, n_templates: int = 64, trees_per_round: int = 25, max_rounds: int = 12,
                 min_samples_leaf: int = 2, max_features: float = 0.3, patience: int = 2, min_rounds: int = 1,
                 threshold: float | None = None, entity_thresholds: bool = False,
                 validation_fraction: float = 0.15, seed: int = 0,
                 verbose: int = 0):
        self.n_templates = n_templates
        self.trees_per_round = trees_per_round
        self.max_rounds = max_rounds
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.patience = patience
        self.min_rounds = min_rounds
        self.threshold = threshold
        self.entity_thresholds = entity_thresholds
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.verbose = verbose

    def _check_params(self) -> None:
        self._check_common()
        if isinstance(self.trees_per_round, bool) or not isinstance(self.trees_per_round, int) \
                or self.trees_per_round < 1:
            raise ParameterError(f"trees_per_round: expected an integer >= 1, got {self.trees_per_round!r}")
        if not 0.0 < self.max_features <= 1.0:
            raise ParameterError(f"max_features: expected a fraction in (0, 1], got {self.max_features!r}")

    def _grow(self, f, y, round_):
        from sklearn.ensemble import ExtraTreesClassifier

        if round_ == 1:
            self.forest_ = ExtraTreesClassifier(
                n_estimators=0, warm_start=True, min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features, random_state=self.seed, n_jobs=1,
            )
        self.forest_.n_estimators = round_ * self.trees_per_round
        self.forest_.fit(f, y)

    def _proba(self, f) -> np.ndarray:
        per_tag = self.forest_.predict_proba(f)
        cols = []
        for k, p in enumerate(per_tag):
            classes = list(self.forest_.classes_[k])
            cols.append(p[:, classes.index(1)] if 1 in classes else np.zeros(len(f)))
        return np.stack(cols, axis=1).astype(np.float32)

    def _snapshot(self):
        return len(self.forest_.estimators_)

    def _restore(self, n_trees: int) -> None:
        del self.forest_.estimators_[n_trees:]
        self.forest_.n_estimators = n_trees

    def _model_object(self):
        return self.forest_

    def _is_model_object(self, obj) -> bool:
        from sklearn.ensemble import ExtraTreesClassifier

        return isinstance(obj, ExtraTreesClassifier)

    def _set_model_object(self, obj) -> None:
        self.forest_ = obj
