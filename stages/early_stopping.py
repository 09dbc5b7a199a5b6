"""Early stopping on the validation loss, for a classifier trained epoch by epoch (the MLP).

scikit-learn's `MLPClassifier(early_stopping=True)` judges each epoch by its accuracy on a
validation split, and keeps the weights of the best epoch. When one class dominates and the
signal is weak, that accuracy is the majority class's share epoch after epoch: the network
stops after `n_iter_no_change + 1` epochs and goes back to the weights of its first one.
Measured on 5,000 rows with 6% positives (3-fold CV): ROC AUC 0.64, where logistic
regression reached 0.77; on a set with 6% positives the issue saw 0.47, below the dummy.
Log loss, the loss the network minimises, moves whenever its probabilities improve, so it
is a criterion that is never flat while the network learns. scikit-learn 1.9 offers no
other criterion for the MLP, hence `EarlyStoppingClassifier`: it trains the estimator one
epoch at a time (`partial_fit`) and stops when the log loss on a held-out, stratified
split has not improved for `n_iter_no_change` epochs, keeping the estimator as it was at
its best epoch. On the same 5,000 rows: ROC AUC 0.75 and a log loss below the dummy's.

The exported model holds the plain fitted estimator (`stages.subsample.unwrap`), so
loading it needs nothing from crispml.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.utils import get_tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _num_samples, check_array, check_consistent_length

from stages.delegation import DelegatesToFitted


class EarlyStoppingClassifier(DelegatesToFitted, ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """Train a classifier epoch by epoch; stop when its validation log loss stops improving.

    Args:
        estimator: A classifier with `partial_fit(X, y, classes=...)` (one epoch per call)
            and `predict_proba`, e.g. `MLPClassifier(early_stopping=False)`.
        validation_fraction: Share of the training rows held out to judge each epoch
            (at least 2 rows; stratified by class when every class has at least 2 rows).
        n_iter_no_change: Epochs without an improvement of at least `tol` before stopping.
        tol: Smallest decrease of the validation log loss that counts as an improvement.
        max_iter: Most epochs.
        random_state: Seed of the validation split.

    Attributes:
        estimator_: The estimator as it was after its best epoch.
        classes_: The class labels.
        n_iter_: Epochs run.
        best_epoch_: The epoch (from 1) whose estimator was kept.
        validation_loss_curve_: The validation log loss after each epoch.
    """

    def __init__(
        self,
        estimator: Any,
        *,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        max_iter: int = 500,
        random_state: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> EarlyStoppingClassifier:
        """Train a clone of the estimator until its validation log loss stops improving.

        Args:
            X: Training features.
            y: Training labels.

        Returns:
            self

        Raises:
            ValueError: A parameter is out of range, fewer than 3 rows, or only one class.
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        # Checked here, not only by the estimator: the split and the loss come first. The
        # estimator gets X as it came (a DataFrame keeps its column names).
        check_array(X, accept_sparse=True, dtype=None, ensure_min_samples=3)
        check_consistent_length(X, y)
        y = np.asarray(y)
        check_classification_targets(y)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in the training rows, got 1 class ({str(classes[0])!r})"
            )
        n = _num_samples(X)
        n_validation = max(2, math.ceil(n * self.validation_fraction))
        stratify = y if counts.min() >= 2 and n_validation >= len(classes) and n - n_validation >= len(classes) else None
        X_train, X_val, y_train, y_val = train_test_split(
            X, y, test_size=n_validation, stratify=stratify, random_state=self.random_state
        )
        model = clone(self.estimator)
        best, best_loss, stale, losses = model, math.inf, 0, []
        for _ in range(self.max_iter):
            model.partial_fit(X_train, y_train, classes=classes)
            loss = log_loss(y_val, model.predict_proba(X_val), labels=model.classes_)
            losses.append(float(loss))
            stale = 0 if loss < best_loss - self.tol else stale + 1
            if loss < best_loss:
                best, best_loss = copy.deepcopy(model), loss
            if stale >= self.n_iter_no_change:
                break
        else:
            warnings.warn(
                f"{type(self).__name__}: the validation log loss was still improving after max_iter={self.max_iter} "
                "epochs; raise max_iter",
                ConvergenceWarning,
            )
        self.estimator_ = best
        self.n_iter_ = len(losses)
        self.best_epoch_ = int(np.argmin(losses)) + 1
        self.validation_loss_curve_ = losses
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(best, name):
                setattr(self, name, getattr(best, name))
        return self

    def _check_params(self) -> None:
        problems = []
        if not 0 < self.validation_fraction < 1:
            problems.append(f"validation_fraction must be between 0 and 1, got {self.validation_fraction!r}")
        for name in ("n_iter_no_change", "max_iter"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not self.tol >= 0:
            problems.append(f"tol must be non-negative, got {self.tol!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags = get_tags(self.estimator).input_tags
        return tags
