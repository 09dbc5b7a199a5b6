import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from pipeline.errors import DataError
from stages.metrics import METRICS
from stages.modeling import FAILED, MODELS, OK, CandidateResult, ModelSettings, build_candidates, compare_models, make_folds, rank
from stages.preparation import build_preprocessor, features_and_target
from stages.understanding import profile_data


class ExplodingClassifier(ClassifierMixin, BaseEstimator):
    """A candidate that always fails to fit."""

    def fit(self, X, y):
        raise RuntimeError("boom on purpose")


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


@pytest.fixture
def regression_data():
    rng = np.random.default_rng(0)
    # A trend across rows makes every fold's mean differ from the overall mean.
    X = pd.DataFrame({"a": np.linspace(0, 10, 100) + rng.normal(size=100), "b": rng.normal(size=100)})
    y = pd.Series(2 * X["a"] + rng.normal(size=100), name="y")
    return X, y


def test_registry_has_the_six_candidates_for_every_task():
    assert list(MODELS) == ["baseline", "linear", "svm", "random_forest", "adaboost", "mlp"]
    for task in ["regression", "binary", "multiclass"]:
        for name, spec in MODELS.items():
            model = spec.build(ModelSettings(task=task, seed=0))
            assert hasattr(model, "fit"), name
    mlp = MODELS["mlp"].build(ModelSettings(task="multiclass", seed=0, mlp_hidden_layers=(8, 4)))
    assert mlp.hidden_layer_sizes == (8, 4) and mlp.activation == "relu"


def test_mlp_stops_early_only_on_enough_rows():
    small = MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=300))
    large = MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=5000))
    assert not small.early_stopping and large.early_stopping


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
    pre = build_preprocessor(profile, 0.01, 20)
    candidates = build_candidates(["baseline", "linear"], pre, ModelSettings("binary", 0))
    candidates["exploding"] = Pipeline([("prepare", clone(pre)), ("model", ExplodingClassifier())])
    board = compare_models(candidates, X, y, make_folds(y, "binary", 3, 0), "binary", "roc_auc", n_jobs=1)
    rows = {r.name: r for r in board.rows}
    assert rows["exploding"].status == FAILED
    assert "RuntimeError: boom on purpose" in rows["exploding"].error
    assert board.rows[-1].name == "exploding"
    assert rows["linear"].status == OK and len(rows["linear"].fold_scores["roc_auc"]) == 3
    assert board.best.name == "linear"
    assert "exploding" in set(board.to_frame()["model"])


def test_preprocessing_is_fitted_inside_each_fold(regression_data):
    """The leak test: the probe fails if the scaler learnt from any row outside the training fold."""
    X, y = regression_data
    folds = make_folds(y, "regression", 5, seed=0)
    scaler = ColumnTransformer([("scale", StandardScaler(), ["a", "b"])])
    inside = {"probe": Pipeline([("prepare", scaler), ("model", CentredInputProbe())])}
    board = compare_models(inside, X, y, folds, "regression", "r2", n_jobs=1)
    assert board.rows[0].status == OK, board.rows[0].error

    # Control: the same probe catches a scaler fitted on all rows before cross-validation.
    leaked = StandardScaler().fit(X)
    outside = {"probe": Pipeline([("prepare", FunctionTransformer(leaked.transform)), ("model", CentredInputProbe())])}
    board = compare_models(outside, X, y, folds, "regression", "r2", n_jobs=1)
    assert board.rows[0].status == FAILED and "preprocessing saw other rows" in board.rows[0].error


def test_every_candidate_sees_the_same_folds(regression_data):
    X, y = regression_data
    folds = make_folds(y, "regression", 4, seed=0)
    candidates = {
        name: Pipeline([("model", DummyRegressor(strategy=strategy))]) for name, strategy in [("mean", "mean"), ("median", "median")]
    }
    board = compare_models(candidates, X, y, folds, "regression", "rmse", n_jobs=2)
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
    pre = build_preprocessor(profile, 0.01, 20)
    candidates = build_candidates(list(MODELS), pre, ModelSettings(task, 0))
    metric = {"regression": "r2", "binary": "roc_auc", "multiclass": "balanced_accuracy"}[task]
    board = compare_models(candidates, X, y, make_folds(y, task, 3, 0), task, metric, n_jobs=2)
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


def test_svr_learns_a_target_far_from_unit_scale():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200)})
    y = pd.Series(4000 + 800 * X["a"] + rng.normal(scale=50, size=200), name="grams")
    candidates = {"svm": Pipeline([("prepare", StandardScaler()), ("model", MODELS["svm"].build(ModelSettings("regression", 0)))])}
    board = compare_models(candidates, X, y, make_folds(y, "regression", 3, 0), "regression", "r2", n_jobs=1)
    assert board.rows[0].mean("r2") > 0.9, board.rows[0].error


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_costly_candidates_change_strategy_above_their_row_thresholds(task):
    from stages import modeling

    small = ModelSettings(task, 0, n_rows=modeling.EXACT_SVM_MAX_ROWS)
    large = ModelSettings(task, 0, n_rows=1_000_000)
    strategy = {
        size: {name: modeling.describe_strategy(spec.build(s)) for name, spec in modeling.MODELS.items()}
        for size, s in (("small", small), ("large", large))
    }
    assert strategy["small"]["svm"] == "exact RBF kernel"
    assert strategy["small"]["random_forest"] == "" and strategy["small"]["adaboost"] == ""
    assert "Nystroem(300)" in strategy["large"]["svm"] and "learns from 30,000 sampled rows" in strategy["large"]["svm"]
    assert strategy["large"]["random_forest"] == "each tree on a bootstrap sample of 20,000 rows"
    assert strategy["large"]["adaboost"] == "learns from 100,000 sampled rows"
    assert strategy["large"]["mlp"] == "learns from 100,000 sampled rows; early stopping"
    assert strategy["large"]["linear"] == strategy["large"]["baseline"] == ""


def test_sharing_each_folds_preparation_gives_the_scores_of_separate_pipelines(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    pre = build_preprocessor(profile, 0.01, 20)
    shared = build_candidates(["baseline", "linear", "random_forest"], pre, ModelSettings("binary", 0))
    # An extra pass-through step makes each candidate fit its own preparation, as a plain Pipeline does.
    separate = {name: Pipeline([("prepare", clone(pre)), ("same", "passthrough"), p.steps[-1]]) for name, p in shared.items()}
    folds = make_folds(y, "binary", 3, 0)
    a = compare_models(shared, X, y, folds, "binary", "roc_auc", n_jobs=1)
    b = compare_models(separate, X, y, folds, "binary", "roc_auc", n_jobs=2)
    assert {r.name: r.fold_scores for r in a.rows} == {r.name: r.fold_scores for r in b.rows}


class CountingScaler(StandardScaler):
    """A scaler that counts its fits (the fits run in this process with n_jobs=1)."""

    fits = 0

    def fit(self, X, y=None, sample_weight=None):
        CountingScaler.fits += 1
        return super().fit(X, y, sample_weight)


def test_each_folds_preparation_is_fitted_once_for_all_candidates_and_not_reused_by_the_next_comparison(monkeypatch):
    monkeypatch.setattr(CountingScaler, "fits", 0)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    y = pd.Series((X["a"] + rng.normal(scale=0.5, size=120) > 0).astype(int))
    candidates = build_candidates(["baseline", "linear", "random_forest"], CountingScaler(), ModelSettings("binary", 0))
    folds = make_folds(y, "binary", 3, 0)
    first = compare_models(candidates, X, y, folds, "binary", "roc_auc", n_jobs=1)
    assert CountingScaler.fits == 3  # once per fold, not once per (candidate, fold)
    second = compare_models(candidates, X * 10, y, folds, "binary", "roc_auc", n_jobs=1)
    assert CountingScaler.fits == 6  # a new comparison prepares its own data again
    assert all(r.status == OK for r in first.rows + second.rows)


def test_fits_start_costliest_first_fold_by_fold_or_cheapest_first_under_a_budget():
    from stages.modeling import _schedule

    candidates = dict.fromkeys(["baseline", "mlp", "linear", "linear:tuned", "svm"])
    unbudgeted = [t.args for t in _schedule(candidates, 2, budgeted=False)]
    assert unbudgeted[:5] == [("linear:tuned", 0), ("mlp", 0), ("svm", 0), ("linear", 0), ("baseline", 0)]
    assert unbudgeted[5] == ("linear:tuned", 1)
    budgeted = [t.args[0] for t in _schedule(candidates, 2, budgeted=True)]
    assert budgeted == ["baseline"] * 2 + ["linear"] * 2 + ["svm"] * 2 + ["mlp"] * 2 + ["linear:tuned"] * 2
