"""EarlyStoppingClassifier: early stopping on the validation log loss, which moves when accuracy is flat."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from stages.early_stopping import EarlyStoppingClassifier
from stages.subsample import RowSubsample, unwrap


def _imbalanced(n=2000, seed=0):
    """6% positives and a weak signal: a network's accuracy stays at the majority share for many epochs."""
    return make_classification(n, 20, n_informative=2, class_sep=0.3, weights=[0.94], flip_y=0, random_state=seed)


@parametrize_with_checks([EarlyStoppingClassifier(MLPClassifier((16,), learning_rate_init=0.01, random_state=0), max_iter=100, random_state=0)])
def test_it_follows_scikit_learns_rules(estimator, check):
    check(estimator)


def test_it_keeps_the_estimator_of_its_best_epoch_and_stops_after_n_iter_no_change():
    X, y = _imbalanced(1000)
    model = EarlyStoppingClassifier(MLPClassifier((32,), random_state=0), n_iter_no_change=5, random_state=0).fit(X, y)
    losses = model.validation_loss_curve_
    assert model.n_iter_ == len(losses) < 500
    assert model.best_epoch_ == int(np.argmin(losses)) + 1
    # Stopped after the first 5 epochs in a row that each missed the best loss before them by tol.
    improved = [losses[k] < min(losses[:k], default=np.inf) - model.tol for k in range(len(losses))]
    assert not any(improved[-5:]) and all(any(improved[k - 5 : k]) for k in range(5, len(losses)))
    assert len(model.estimator_.loss_curve_) == model.best_epoch_  # the copy taken at the best epoch
    assert isinstance(model.estimator_, MLPClassifier) and list(model.classes_) == [0, 1]
    # Its validation loss is the recorded best; the rows it held out are those of the stratified split.
    from sklearn.model_selection import train_test_split

    _, X_val, _, y_val = train_test_split(X, y, test_size=100, stratify=y, random_state=0)
    assert log_loss(y_val, model.predict_proba(X_val)) == pytest.approx(min(losses))


def test_on_imbalanced_classes_it_learns_where_stopping_on_accuracy_does_not():
    X, y = _imbalanced()
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    on_loss = EarlyStoppingClassifier(MLPClassifier((64, 32), random_state=0), random_state=0)
    on_accuracy = MLPClassifier((64, 32), early_stopping=True, max_iter=500, random_state=0)  # scikit-learn's own
    auc_loss = cross_val_score(on_loss, X, y, cv=folds, scoring="roc_auc").mean()
    auc_accuracy = cross_val_score(on_accuracy, X, y, cv=folds, scoring="roc_auc").mean()
    assert auc_accuracy < 0.6  # the failure it exists for: flat accuracy, first epoch's weights kept
    assert auc_loss > 0.75


def test_max_iter_reached_is_a_convergence_warning():
    X, y = _imbalanced(500)
    with pytest.warns(ConvergenceWarning, match=r"still improving after max_iter=2 epochs; raise max_iter"):
        model = EarlyStoppingClassifier(MLPClassifier((8,), random_state=0), max_iter=2, random_state=0).fit(X, y)
    assert model.n_iter_ == 2


def test_any_classifier_with_partial_fit_works_and_text_labels_are_kept():
    X, y = _imbalanced(600)
    labels = np.where(y == 1, "yes", "no")
    model = EarlyStoppingClassifier(SGDClassifier(loss="log_loss", random_state=0), random_state=0).fit(X, labels)
    assert list(model.classes_) == ["no", "yes"] and set(model.predict(X)) <= {"no", "yes"}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"validation_fraction": 1.0}, r"validation_fraction must be between 0 and 1, got 1.0"),
        ({"n_iter_no_change": 0, "max_iter": 2.5}, r"n_iter_no_change must be a positive integer, got 0; max_iter must be a positive integer, got 2.5"),
        ({"tol": -1.0}, r"tol must be non-negative, got -1.0"),
    ],
)
def test_bad_parameters_are_refused_in_fit(params, message):
    X, y = _imbalanced(100)
    with pytest.raises(ValueError, match=message):
        EarlyStoppingClassifier(MLPClassifier(), **params).fit(X, y)


def test_one_class_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"needs at least 2 classes in the training rows, got 1 class \('a'\)"):
        EarlyStoppingClassifier(MLPClassifier()).fit(np.zeros((20, 2)), ["a"] * 20)


def test_unwrap_leaves_the_plain_network_also_under_a_row_subsample():
    X, y = _imbalanced(1200)
    wrapped = RowSubsample(EarlyStoppingClassifier(MLPClassifier((8,), random_state=0), random_state=0), max_rows=800, random_state=0)
    fitted = Pipeline([("prepare", StandardScaler()), ("model", wrapped)]).fit(X, y)
    plain = unwrap(fitted)
    assert type(plain.steps[-1][1]) is MLPClassifier
    np.testing.assert_array_equal(plain.predict_proba(X), fitted.predict_proba(X))
