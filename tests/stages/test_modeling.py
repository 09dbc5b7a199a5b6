"""Comparing the candidates: the folds, one fit per candidate and fold, a failure a result, and the ranked leaderboard."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.dummy import DummyRegressor
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from pipeline.backends.local_pool import LocalPool
from pipeline.settings import PreparationConfig
from stages.errors import DataError
from stages.metrics import METRICS
from stages.model_registry import MODELS, ModelSettings, build_candidates
from stages.modeling import FAILED, OK, CandidateResult, compare_models, hyperparameters, make_folds, rank
from stages.preparation import build_preprocessor, features_and_target
from stages.understanding import profile_data

from frames import regression_data


class ExplodingClassifier(ClassifierMixin, BaseEstimator):
    """A candidate that always fails to fit."""

    def fit(self, X, y):
        raise RuntimeError("boom on purpose")


def test_folds_are_stratified_reproducible_and_cover_every_row():
    y = pd.Series(["a"] * 30 + ["b"] * 10, name="y")
    folds = make_folds(y, "binary", 5, seed=1)
    assert len(folds) == 5
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests) == list(range(40))
    assert all((y.iloc[test] == "b").sum() == 2 for _, test in folds)
    again = make_folds(y, "binary", 5, seed=1)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))


def test_a_class_smaller_than_the_folds_is_an_error_that_suggests_fewer():
    y = pd.Series(["a"] * 30 + ["b"] * 3, name="y")
    with pytest.raises(DataError, match=r"class 'b' .* has only 3 training rows \(after the holdout\), fewer than the 5 folds; use fewer folds \(--folds 3\)"):
        make_folds(y, "binary", 5, seed=0)


def test_a_class_of_one_row_cannot_be_cross_validated_with_any_folds():
    y = pd.Series(["a"] * 30 + ["b"], name="y")
    with pytest.raises(DataError, match=r"class 'b' .* has only 1 training row .*too few to cross-validate with any number of folds"):
        make_folds(y, "binary", 2, seed=0)


def test_fewer_rows_than_folds_is_an_error():
    with pytest.raises(DataError, match=r"only 3 training rows \(after the holdout\) for 5 folds; add rows or use fewer folds \(--folds 3\)"):
        make_folds(pd.Series([1.0, 2.0, 3.0], name="y"), "regression", 5, seed=0)


def test_a_failing_candidate_is_reported_and_the_others_go_on(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    pre = build_preprocessor(profile, PreparationConfig())
    candidates = build_candidates(["baseline", "linear"], pre, ModelSettings("binary", 0))
    candidates["exploding"] = Pipeline([("prepare", clone(pre)), ("model", ExplodingClassifier())])
    board = compare_models(candidates, X, y, make_folds(y, "binary", 3, 0), "binary", "roc_auc")
    rows = {r.name: r for r in board.rows}
    assert rows["exploding"].status == FAILED
    assert "RuntimeError: boom on purpose" in rows["exploding"].error
    assert board.rows[-1].name == "exploding"
    assert rows["linear"].status == OK and len(rows["linear"].fold_scores["roc_auc"]) == 3
    assert board.best.name == "linear"
    assert "exploding" in set(board.to_frame()["model"])


def test_every_candidate_sees_the_same_folds():
    X, y = regression_data()
    folds = make_folds(y, "regression", 4, seed=0)
    candidates = {
        name: Pipeline([("model", DummyRegressor(strategy=strategy))]) for name, strategy in [("mean", "mean"), ("median", "median")]
    }
    board = compare_models(candidates, X, y, folds, "regression", "rmse", LocalPool(2))
    # A mean-predictor's per-fold RMSE is fully determined by the fold: recompute it.
    expected = [float(np.sqrt(np.mean((y.iloc[te] - y.iloc[tr].mean()) ** 2))) for tr, te in folds]
    rows = {r.name: r for r in board.rows}
    assert rows["mean"].fold_scores["rmse"] == pytest.approx(expected)
    assert len(rows["median"].fold_scores["rmse"]) == 4


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_all_candidates_run_for_each_task(task):
    rng = np.random.default_rng(1)
    n = 90
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["p", "q"], size=n)})
    signal = X["a"] + 0.5 * X["b"]
    if task == "regression":
        y = pd.Series(signal + rng.normal(scale=0.1, size=n), name="y")
    elif task == "binary":
        y = pd.Series(np.where(signal > 0, "pos", "neg"), name="y")
    else:
        y = pd.Series(pd.cut(signal, 3, labels=["lo", "mid", "hi"]).astype(str), name="y")
    profile = profile_data(X.assign(y=y), "y")
    assert profile.task == task
    pre = build_preprocessor(profile, PreparationConfig())
    candidates = build_candidates(list(MODELS), pre, ModelSettings(task, 0))
    metric = {"regression": "r2", "binary": "roc_auc", "multiclass": "balanced_accuracy"}[task]
    board = compare_models(candidates, X, y, make_folds(y, task, 3, 0), task, metric, LocalPool(2))
    assert all(r.status == OK for r in board.rows), [r.error for r in board.rows]
    assert board.best.name != "baseline"
    baseline = next(r for r in board.rows if r.name == "baseline")
    assert board.best.mean(metric) > baseline.mean(metric)
    frame = board.to_frame()
    assert {f"{m}_mean" for m in board.metrics} <= set(frame.columns)
    assert (frame["fit_seconds"] > 0).all()


def test_rank_puts_lower_error_first_and_failures_last():
    def row(name, scores, status=OK):
        return CandidateResult(name, "X", {}, status, fold_scores={"rmse": scores} if scores else {})

    ordered = rank([row("bad", (5.0, 5.0)), row("broken", None, FAILED), row("good", (1.0, 2.0))], METRICS["rmse"])
    assert [r.name for r in ordered] == ["good", "bad", "broken"]
    assert math.isnan(ordered[2].mean("rmse"))


def test_hyperparameters_are_flat_plain_and_without_deprecated_placeholders():
    from sklearn.ensemble import AdaBoostClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    flat = hyperparameters(AdaBoostClassifier(DecisionTreeClassifier(max_depth=np.int64(2)), n_estimators=7))
    assert flat["n_estimators"] == 7 and flat["estimator"] == "DecisionTreeClassifier"
    assert flat["estimator__max_depth"] == 2 and type(flat["estimator__max_depth"]) is int
    assert list(flat) == sorted(flat)
    assert LogisticRegression().get_params()["penalty"] == "deprecated" and "penalty" not in hyperparameters(LogisticRegression())
    assert hyperparameters(MLPClassifier(hidden_layer_sizes=(8, 4)))["hidden_layer_sizes"] == [8, 4]
