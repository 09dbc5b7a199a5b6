"""RowSubsample: a scikit-learn meta-estimator that learns from at most `max_rows` rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from stages.subsample import RowSubsample, unwrap


def _expected_failures(estimator):
    # Only the sampled rows reach the inner estimator, which validates them: a bad cell
    # outside the sample is never seen (validating every row first would cost a full copy).
    return {"check_dtype_object": "rows outside the sample are not validated"} if estimator.max_rows else {}


@parametrize_with_checks(
    [RowSubsample(LogisticRegression(), max_rows=50, random_state=0), RowSubsample(LinearRegression())],
    expected_failed_checks=_expected_failures,
)
def test_it_follows_scikit_learns_rules(estimator, check):
    check(estimator)


def test_it_learns_from_a_stratified_sample_and_predicts_every_row():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=1000)})
    y = np.where(np.arange(1000) < 100, "rare", "common")  # 10% of one class
    model = RowSubsample(DummyClassifier(strategy="prior"), max_rows=200, random_state=0).fit(X, y)
    assert model.n_rows_used_ == 200
    assert model.estimator_.class_prior_[list(model.classes_).index("rare")] == pytest.approx(0.1)
    assert len(model.predict(X)) == 1000 and model.predict_proba(X).shape == (1000, 2)


def test_below_the_cap_it_uses_every_row_and_the_same_fit():
    X, y = np.arange(40.0).reshape(-1, 1), np.arange(40) % 2
    wrapped = RowSubsample(LogisticRegression(), max_rows=100).fit(X, y)
    assert wrapped.n_rows_used_ == 40
    np.testing.assert_allclose(wrapped.predict_proba(X), LogisticRegression().fit(X, y).predict_proba(X))


def test_a_bad_cap_is_refused_in_fit():
    with pytest.raises(ValueError, match="max_rows must be a non-negative integer"):
        RowSubsample(LogisticRegression(), max_rows=-1).fit(np.zeros((4, 1)), [0, 1, 0, 1])


def test_unwrap_leaves_the_plain_fitted_estimator_with_the_same_predictions():
    X, y = np.random.default_rng(1).normal(size=(300, 2)), np.arange(300) % 2
    fitted = Pipeline([("prepare", StandardScaler()), ("model", RowSubsample(LogisticRegression(), 100, 0))]).fit(X, y)
    plain = unwrap(fitted)
    assert isinstance(plain.steps[-1][1], LogisticRegression)
    np.testing.assert_array_equal(plain.predict_proba(X), fitted.predict_proba(X))
    untouched = Pipeline([("model", LogisticRegression())]).fit(X, y)
    assert unwrap(untouched) is untouched


def test_a_sparse_matrix_in_any_format_is_sampled_by_row():
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    dense = rng.normal(size=(300, 3))
    y = (dense[:, 0] > 0).astype(int)
    coo = sp.coo_matrix(dense)  # not row-indexable as it is
    model = RowSubsample(LogisticRegression(), max_rows=100, random_state=0).fit(coo, y)
    same = RowSubsample(LogisticRegression(), max_rows=100, random_state=0).fit(dense, y)
    assert model.n_rows_used_ == 100
    np.testing.assert_allclose(model.predict_proba(coo), same.predict_proba(dense), rtol=1e-6)
