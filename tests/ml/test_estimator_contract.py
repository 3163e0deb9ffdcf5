"""The zoo keeps scikit-learn's estimator contract, checked by scikit-learn itself.

scikit-learn's estimator checks that need no data run as they are. The checks that feed data
assume 2D tables (n_samples, n_features); clips are (n, frames, height, width), so those run
here in their clip form (same assertion, clip data): fit returns self, fit is idempotent,
fit leaves the constructor's parameters and the input alone, an unfitted model raises
NotFittedError, predictions do not depend on the order or the batch of the clips, and
read-only memory-mapped input works. Finally scikit-learn's own GridSearchCV and
cross_val_score run on a zoo model with plain ``fit(X, y)``.
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.utils import estimator_checks as checks

from fanflow.ml.models import MODELS, make_model

from .helpers import TINY

# The checks that apply to estimators whose input is not a 2D table.
DATA_FREE_CHECKS = [
    checks.check_no_attributes_set_in_init,
    checks.check_parameters_default_constructible,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_estimator_cloneable,
    checks.check_estimator_repr,
    checks.check_estimator_tags_renamed,
    checks.check_valid_tag_types,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_estimators_unfitted,
]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda c: c.__name__)
def test_scikit_learn_checks_that_apply(name, check):
    check(name, make_model(name))


@pytest.fixture(scope="module")
def clips(small_data):
    x, y = small_data["train"]["x"][:160], small_data["train"]["y"][:160]
    return np.asarray(x), np.asarray(y)


@pytest.mark.parametrize("name", ["cnn_motion", "logistic"])
def test_data_checks_in_their_clip_form(name, clips, small_data):
    x, y = clips
    model = make_model(name, **TINY[name])
    params = model.get_params()
    with pytest.raises(NotFittedError):
        model.predict(x[:2])
    x_before = x.copy()
    assert model.fit(x, y) is model  # fit returns self, validation held out by the constructor's fraction
    assert np.array_equal(x, x_before)  # the input is left alone
    assert model.get_params() == params  # and so are the parameters
    public = {k for k in vars(model) if not k.startswith("_")}
    assert all(k.endswith("_") for k in public - set(params))  # learnt attributes end in "_"
    test = np.asarray(small_data["test"]["x"][:40])
    first = model.predict_proba(test)
    assert np.array_equal(clone(model).fit(x, y).predict_proba(test), first)  # idempotent
    order = np.random.default_rng(0).permutation(len(test))
    assert np.allclose(model.predict_proba(test[order]), first[order], atol=1e-6)  # sample order
    assert np.allclose(model.predict_proba(test[:7]), first[:7], atol=1e-6)  # subset
    readonly = small_data["test"]["x"][:40]
    assert not readonly.flags.writeable and np.allclose(model.predict_proba(readonly), first, atol=1e-6)


def test_grid_search_and_cross_validation_take_a_zoo_model(clips):
    x, y = clips
    model = make_model("cnn_batchnorm", **TINY["cnn_batchnorm"])
    scores = cross_val_score(model, x, y, cv=KFold(2))
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    search = GridSearchCV(model, {"kernel": [3, 5]}, cv=KFold(2), refit=True).fit(x, y)
    assert search.best_params_["kernel"] in (3, 5) and search.predict(x[:3]).shape == (3, 10)
