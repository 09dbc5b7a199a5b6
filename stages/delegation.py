"""What crispml's meta-estimators (`RowSubsample`, `EarlyStoppingClassifier`) share: answering through the estimator they fitted."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted


def inner_has(name: str) -> Any:
    """For `available_if`: the wrapped estimator (fitted, else as given) has the method `name`."""

    def check(self: Any) -> bool:
        return hasattr(self.estimator_ if hasattr(self, "estimator_") else self.estimator, name)

    return check


class DelegatesToFitted:
    """Predictions, probabilities and classes from `self.estimator_`, for a meta-estimator that fits one estimator."""

    @property
    def classes_(self) -> np.ndarray:
        """The fitted estimator's classes."""
        check_is_fitted(self)
        return self.estimator_.classes_

    @available_if(inner_has("predict"))
    def predict(self, X: Any) -> np.ndarray:
        """The fitted estimator's predictions."""
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(inner_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """The fitted estimator's class probabilities."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(inner_has("predict_log_proba"))
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The fitted estimator's log class probabilities."""
        check_is_fitted(self)
        return self.estimator_.predict_log_proba(X)
