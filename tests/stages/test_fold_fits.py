"""One (candidate, fold) fit: preparation fitted on the training fold only and shared, probabilities aligned, failures a result."""

import math
import uuid

import numpy as np
import pandas as pd
import pytest
from scipy.stats import loguniform, randint
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from stages.fold_fits import param_text, predict_with_proba, preprocessor_keys, run_fold
from stages.metrics import METRICS
from stages.modeling import FAILED, OK, compare_models, make_folds

from frames import regression_data


class CentredInputProbe(RegressorMixin, BaseEstimator):
    """Fails unless its training input has mean 0: true only when the scaler saw just these rows."""

    def fit(self, X, y):
        means = np.asarray(X).mean(axis=0)
        if np.abs(means).max() > 1e-9:
            raise ValueError(f"preprocessing saw other rows: training-fold mean {means.max():.4f}")
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


def test_preprocessing_is_fitted_inside_each_fold():
    """The leak test: the probe fails if the scaler learnt from any row outside the training fold."""
    X, y = regression_data()
    folds = make_folds(y, "regression", 5, seed=0)
    scaler = ColumnTransformer([("scale", StandardScaler(), ["a", "b"])])
    inside = {"probe": Pipeline([("prepare", scaler), ("model", CentredInputProbe())])}
    board = compare_models(inside, X, y, folds, "regression", "r2")
    assert board.rows[0].status == OK, board.rows[0].error

    # Control: the same probe catches a scaler fitted on all rows before cross-validation.
    leaked = StandardScaler().fit(X)
    outside = {"probe": Pipeline([("prepare", FunctionTransformer(leaked.transform)), ("model", CentredInputProbe())])}
    board = compare_models(outside, X, y, folds, "regression", "r2")
    assert board.rows[0].status == FAILED and "preprocessing saw other rows" in board.rows[0].error


def test_probabilities_are_aligned_by_class_name_and_a_class_the_model_never_saw_gets_zero():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=40)})
    y = np.where(X["a"] > 0, "b", "c")
    model = LogisticRegression(random_state=0).fit(X, y)
    pred, proba = predict_with_proba(model, X, np.array(["c", "a", "b"]))
    raw = model.predict_proba(X)  # columns in the model's order: b, c
    assert (pred == model.predict(X)).all()
    assert np.allclose(proba[:, 0], raw[:, 1]) and (proba[:, 1] == 0).all() and np.allclose(proba[:, 2], raw[:, 0])
    assert predict_with_proba(LinearRegression().fit(X, X["a"]), X, None)[1] is None  # regression
    assert predict_with_proba(LinearSVC(random_state=0).fit(X, y), X, np.array(["b", "c"]))[1] is None  # no probabilities


def test_candidates_whose_first_step_prepares_alike_share_a_key():
    candidates = {
        "linear": Pipeline([("prepare", StandardScaler()), ("model", LogisticRegression())]),
        "svm": Pipeline([("prepare", StandardScaler()), ("model", SVC())]),
        "other": Pipeline([("prepare", StandardScaler(with_mean=False)), ("model", SVC())]),
        "unnamed": Pipeline([("scale", StandardScaler()), ("model", SVC())]),
        "longer": Pipeline([("prepare", StandardScaler()), ("kernel", FunctionTransformer()), ("model", SVC())]),
        "bare": SVC(),
    }
    keys = preprocessor_keys(candidates)
    assert set(keys) == {"linear", "svm", "other"}
    assert keys["linear"] == keys["svm"] != keys["other"]


def test_shared_preparation_scores_as_the_candidates_own_pipeline_and_a_failure_is_a_result():
    X, y = regression_data()
    folds = make_folds(y, "regression", 3, seed=0)
    candidates = {
        "linear": Pipeline([("prepare", StandardScaler()), ("model", LinearRegression())]),
        "broken": Pipeline([("prepare", StandardScaler()), ("model", LogisticRegression())]),  # a classifier on a number
    }
    token = uuid.uuid4().hex  # as a comparison does: no other comparison's prepared rows
    keys = {name: f"{token}:{key}" for name, key in preprocessor_keys(candidates).items()}
    metrics = (METRICS["r2"], METRICS["rmse"])
    broken = run_fold((candidates, keys, X, y, folds, metrics, None), ("broken", 0))  # prepares fold 0 for both
    assert broken.scores == {} and broken.error.startswith("ValueError: Unknown label type") and math.isnan(broken.predict_seconds)
    for i in range(len(folds)):
        shared = run_fold((candidates, keys, X, y, folds, metrics, None), ("linear", i))
        alone = run_fold((candidates, {}, X, y, folds, metrics, None), ("linear", i))
        assert shared.fold == alone.fold == i and shared.error == ""
        assert shared.scores == pytest.approx(alone.scores) and set(shared.scores) == {"r2", "rmse"}


def test_param_text_is_short_and_stable():
    assert param_text(loguniform(1e-3, 1e3)) == "loguniform(0.001, 1000)"
    assert param_text(randint(1, 5)) == "randint(1, 5)"
    assert param_text(0.123456) == "0.123" and param_text(np.float32(2.5)) == "2.5"
    assert param_text({"C": loguniform(0.01, 100.0), "n": 5}) == "{C: loguniform(0.01, 100), n: 5}"
    assert param_text(7) == "7" and param_text("rbf") == "rbf"
