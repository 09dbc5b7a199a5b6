"""What crispml's meta-estimators share: predictions, probabilities and classes answered by the estimator they fitted."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from stages.delegation import DelegatesToFitted


class Wrapper(DelegatesToFitted, MetaEstimatorMixin, BaseEstimator):
    """The smallest meta-estimator: it fits a clone of `estimator` on every row."""

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y):
        self.estimator_ = clone(self.estimator).fit(X, y)
        return self


@pytest.fixture
def labelled():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = np.array(["cat", "dog", "eel"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)]
    return X, y


def test_answers_come_from_the_fitted_clone(labelled):
    X, y = labelled
    given = LogisticRegression(random_state=0)
    wrapped = Wrapper(given).fit(X, y)
    direct = LogisticRegression(random_state=0).fit(X, y)
    assert list(wrapped.classes_) == ["cat", "dog", "eel"]
    assert (wrapped.predict(X) == direct.predict(X)).all()
    assert np.allclose(wrapped.predict_proba(X), direct.predict_proba(X))
    assert np.allclose(wrapped.predict_log_proba(X), direct.predict_log_proba(X))
    with pytest.raises(NotFittedError):  # the estimator it was given is left as it was
        check_is_fitted(given)


def test_a_method_the_inner_estimator_lacks_is_not_offered():
    assert hasattr(Wrapper(LogisticRegression()), "predict_proba")
    assert not hasattr(Wrapper(LinearRegression()), "predict_proba")
    assert not hasattr(Wrapper(LinearRegression()), "predict_log_proba")
    assert hasattr(Wrapper(LinearRegression()), "predict")
    assert not hasattr(Wrapper(SVC()), "predict_proba")  # the inner one's own availability counts
    assert hasattr(Wrapper(SVC(probability=True)), "predict_proba")


def test_once_fitted_the_fitted_estimator_decides_what_is_offered(labelled):
    X, y = labelled
    wrapped = Wrapper(SVC(random_state=0)).fit(X, y)
    wrapped.set_params(estimator=LogisticRegression())  # changed after the fit: not what answers
    assert not hasattr(wrapped, "predict_proba")
    assert set(wrapped.predict(X)) <= {"cat", "dog", "eel"}


def test_nothing_is_answered_before_the_fit(labelled):
    X, _ = labelled
    wrapped = Wrapper(LogisticRegression())
    with pytest.raises(NotFittedError):
        wrapped.predict(X)
    with pytest.raises(NotFittedError):
        wrapped.predict_proba(X)
    with pytest.raises(NotFittedError):
        wrapped.classes_
