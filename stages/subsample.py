"""A meta-estimator that learns from at most a fixed number of rows: how large data stays affordable.

Some candidates cost more than linear time in the rows (a kernel machine, boosting's
sequential stumps, an MLP's epochs). Above a row threshold the registry in
`stages.modeling` wraps them in `RowSubsample`, so that they learn from a random
(for classifiers: stratified) sample of the training rows and are still scored on every
test row. The choice is visible: the wrapper and its `max_rows` are the candidate's
parameters on the leaderboard and in MLflow, and `n_rows_used_` says how many rows it learnt from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, get_tags, resample
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_consistent_length, check_is_fitted

from stages.delegation import DelegatesToFitted, inner_has
from stages.early_stopping import EarlyStoppingClassifier


class RowSubsample(DelegatesToFitted, MetaEstimatorMixin, BaseEstimator):
    """Fit `estimator` on a random sample of at most `max_rows` rows; predict with it on all rows.

    Args:
        estimator: The estimator to fit.
        max_rows: Most rows it learns from; 0 or None uses every row.
        random_state: Seed of the sample.
    """

    def __init__(self, estimator: Any, max_rows: int | None = None, random_state: int | None = None) -> None:
        self.estimator = estimator
        self.max_rows = max_rows
        self.random_state = random_state

    def fit(self, X: Any, y: Any, **fit_params: Any) -> RowSubsample:
        """Fit a clone of the estimator on the sample.

        Args:
            X: Training features.
            y: Training target.
            **fit_params: Passed to the estimator's `fit` (row-aligned ones are not sampled).

        Returns:
            self
        """
        if self.max_rows is not None and (not isinstance(self.max_rows, (int, np.integer)) or self.max_rows < 0):
            raise ValueError(f"max_rows must be a non-negative integer or None, got {self.max_rows!r}")
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        check_consistent_length(X, y)
        n = _num_samples(X)
        if self.max_rows and n > self.max_rows:
            if sp.issparse(X):
                X = X.tocsr()  # row-indexable
            stratify = np.asarray(y) if is_classifier(self.estimator) else None
            rows = resample(
                np.arange(n), replace=False, n_samples=self.max_rows, random_state=self.random_state, stratify=stratify
            )
            rows = np.sort(rows)
            X, y = _safe_indexing(X, rows), _safe_indexing(y, rows)
        self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        self.n_rows_used_ = _num_samples(X)
        if hasattr(self.estimator_, "n_features_in_"):
            self.n_features_in_ = self.estimator_.n_features_in_
        if hasattr(self.estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.estimator_.feature_names_in_
        return self

    @available_if(inner_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """The fitted estimator's decision function."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(inner_has("score"))
    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The fitted estimator's default score."""
        check_is_fitted(self)
        return self.estimator_.score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.target_tags = inner.target_tags
        tags.input_tags = inner.input_tags
        return tags


def unwrap(fitted: Pipeline) -> Pipeline:
    """The fitted pipeline with crispml's wrappers of the model step replaced by the plain estimator they fitted.

    The wrappers are `RowSubsample` and `stages.early_stopping.EarlyStoppingClassifier`,
    one inside the other on large data. Predictions are the same; the exported model then
    holds only scikit-learn types and needs nothing from crispml to load.

    Args:
        fitted: A fitted pipeline.

    Returns:
        The same pipeline object when its model step is not such a wrapper, else a new one.
    """
    *steps, (name, model) = fitted.steps
    plain = model
    while isinstance(plain, (RowSubsample, EarlyStoppingClassifier)):
        plain = plain.estimator_
    return fitted if plain is model else Pipeline([*steps, (name, plain)])
