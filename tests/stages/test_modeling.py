import math

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.datasets import make_classification
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from pipeline.backends.local_pool import LocalPool
from pipeline.settings import PreparationConfig
from stages.early_stopping import EarlyStoppingClassifier
from stages.errors import DataError
from stages.metrics import METRICS
from stages.model_registry import COMMON_TRUSTED_TYPES, MODELS, ModelSettings, build_candidates
from stages.modeling import FAILED, OK, CandidateResult, compare_models, hyperparameters, make_folds, rank
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


def test_registry_has_the_seven_candidates_for_every_task():
    assert list(MODELS) == ["baseline", "linear", "svm", "random_forest", "adaboost", "mlp", "gradient_boosting"]
    for task in ["regression", "binary", "multiclass"]:
        for name, spec in MODELS.items():
            model = spec.build(ModelSettings(task=task, seed=0))
            assert hasattr(model, "fit"), name
        boosting = MODELS["gradient_boosting"].build(ModelSettings(task=task, seed=7))
        expected = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
        assert type(boosting) is expected and boosting.random_state == 7
    mlp = MODELS["mlp"].build(ModelSettings(task="multiclass", seed=0, mlp_hidden_layers=(8, 4)))
    assert mlp.hidden_layer_sizes == (8, 4) and mlp.activation == "relu"


def test_simpler_models_rank_lower_and_gradient_boosting_sits_between_adaboost_and_the_forest():
    order = sorted(MODELS, key=lambda name: MODELS[name].complexity)
    assert order == ["baseline", "linear", "adaboost", "gradient_boosting", "random_forest", "svm", "mlp"]


def test_the_regression_mlp_learns_a_standardised_target_and_stops_early_from_200_rows():
    small = MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=100))
    large = MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=5000))
    for model in (small, large):
        assert isinstance(model, TransformedTargetRegressor) and isinstance(model.transformer, StandardScaler)
    assert not small.regressor.early_stopping and large.regressor.early_stopping
    assert MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=200)).regressor.early_stopping
    # Fitted: the network's own target has mean 0 and unit variance, whatever the scale of y.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = 5000 + 800 * X[:, 0] + rng.normal(scale=50, size=300)
    fitted = MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=300)).fit(X, y)
    assert fitted.transformer_.mean_[0] == pytest.approx(y.mean()) and fitted.transformer_.scale_[0] == pytest.approx(y.std())
    assert abs(fitted.regressor_.predict(X).mean()) < 0.2  # it predicts standardised values
    assert fitted.predict(X).mean() == pytest.approx(y.mean(), rel=0.02)


def test_the_loss_curve_of_the_regression_mlp_is_drawn_from_inside_its_target_transformer():
    from stages.reporting import loss_curve_plot

    rng = np.random.default_rng(0)
    X = rng.normal(size=(250, 2))
    fitted = MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=250)).fit(X, 100 * X[:, 0])
    assert isinstance(fitted, TransformedTargetRegressor)
    assert loss_curve_plot(fitted).startswith(b"\x89PNG")
    assert loss_curve_plot(MODELS["linear"].build(ModelSettings(task="regression", seed=0)).fit(X, X[:, 0])) is None


def test_the_classification_mlp_stops_on_validation_log_loss_from_1000_rows():
    small = MODELS["mlp"].build(ModelSettings(task="binary", seed=0, n_rows=999))
    large = MODELS["mlp"].build(ModelSettings(task="binary", seed=3, n_rows=1000))
    assert isinstance(small, MLPClassifier) and not small.early_stopping
    assert isinstance(large, EarlyStoppingClassifier) and large.random_state == 3
    assert isinstance(large.estimator, MLPClassifier) and not large.estimator.early_stopping


def test_the_mlp_on_imbalanced_classes_scores_well_above_the_dummy():
    """6% positives and a weak signal: stopping on validation accuracy kept the first epoch's weights (ROC AUC 0.52)."""
    X, y = make_classification(2000, 20, n_informative=2, class_sep=0.3, weights=[0.94], flip_y=0, random_state=0)
    X, y = pd.DataFrame(X).add_prefix("x"), pd.Series(np.where(y == 1, "yes", "no"), name="y")
    folds = make_folds(y, "binary", 3, 0)
    settings = ModelSettings("binary", 0, n_rows=len(y))
    candidates = build_candidates(["baseline", "mlp"], StandardScaler().set_output(transform="pandas"), settings)
    board = compare_models(candidates, X, y, folds, "binary", "roc_auc")
    rows = {r.name: r for r in board.rows}
    assert rows["baseline"].mean("roc_auc") == 0.5
    assert rows["mlp"].mean("roc_auc") > 0.75, rows["mlp"].error
    assert rows["mlp"].mean("log_loss") < rows["baseline"].mean("log_loss")
    assert rows["mlp"].estimator == "MLPClassifier" and rows["mlp"].strategy == "early stopping on validation log loss"


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


def test_preprocessing_is_fitted_inside_each_fold(regression_data):
    """The leak test: the probe fails if the scaler learnt from any row outside the training fold."""
    X, y = regression_data
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


def test_every_candidate_sees_the_same_folds(regression_data):
    X, y = regression_data
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


def test_svr_learns_a_target_far_from_unit_scale():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200)})
    y = pd.Series(4000 + 800 * X["a"] + rng.normal(scale=50, size=200), name="grams")
    candidates = {"svm": Pipeline([("prepare", StandardScaler()), ("model", MODELS["svm"].build(ModelSettings("regression", 0)))])}
    board = compare_models(candidates, X, y, make_folds(y, "regression", 3, 0), "regression", "r2")
    assert board.rows[0].mean("r2") > 0.9, board.rows[0].error


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_costly_candidates_change_strategy_above_their_row_thresholds(task):
    from stages import model_registry

    small = ModelSettings(task, 0, n_rows=model_registry.EXACT_SVM_MAX_ROWS)
    large = ModelSettings(task, 0, n_rows=1_000_000)
    strategy = {
        size: {name: model_registry.describe_strategy(spec.build(s)) for name, spec in model_registry.MODELS.items()}
        for size, s in (("small", small), ("large", large))
    }
    assert strategy["small"]["svm"] == "exact RBF kernel"
    assert strategy["small"]["random_forest"] == "" and strategy["small"]["adaboost"] == ""
    assert strategy["small"]["gradient_boosting"] == "early stopping on validation loss, at most 100 boosting iterations"
    assert "Nystroem(300)" in strategy["large"]["svm"] and "learns from 30,000 sampled rows" in strategy["large"]["svm"]
    assert strategy["large"]["random_forest"] == "each tree on a bootstrap sample of 20,000 rows"
    assert strategy["large"]["adaboost"] == "learns from 100,000 sampled rows"
    stopping = "early stopping on validation r2" if task == "regression" else "early stopping on validation log loss"
    assert strategy["large"]["mlp"] == f"learns from 100,000 sampled rows; {stopping}"
    assert strategy["large"]["gradient_boosting"] == (
        "learns from 200,000 sampled rows; early stopping on validation loss, at most 100 boosting iterations"
    )
    assert strategy["large"]["linear"] == strategy["large"]["baseline"] == ""


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_gradient_boosting_stops_early_above_10000_rows_as_scikit_learns_auto_does(task):
    from stages import model_registry

    at = model_registry.GRADIENT_BOOSTING_EARLY_STOPPING_MIN_ROWS
    below = MODELS["gradient_boosting"].build(ModelSettings(task, 0, n_rows=at))
    above = MODELS["gradient_boosting"].build(ModelSettings(task, 0, n_rows=at + 1))
    assert below.early_stopping is False and above.early_stopping is True
    assert model_registry.describe_strategy(below) == "100 boosting iterations"
    # The rule of 'auto', decided once from the run's rows (so that every fold and the refit
    # agree): on rows it cannot learn from, it stops after n_iter_no_change iterations.
    assert above.fit(np.zeros((at + 1, 1)), np.arange(at + 1) % 2).n_iter_ < 100
    small = MODELS["mlp"].build(ModelSettings(task, 0, n_rows=100))
    assert model_registry.describe_strategy(small) == "trained to convergence"


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


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_entry_declares_the_types_its_fitted_model_needs_skops_to_trust(name, task):
    """Without them the model fails to save at the end of a run: the entry, not a list elsewhere, names them."""
    X, y = make_classification(n_samples=120, n_features=4, n_informative=3, n_redundant=0, n_classes=3 if task == "multiclass" else 2, random_state=0)
    target = X[:, 0] * 3 + X[:, 1] if task == "regression" else y
    model = MODELS[name].build(ModelSettings(task=task, seed=0, n_rows=len(target))).fit(X, target)
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(model)))
    assert untrusted <= {*COMMON_TRUSTED_TYPES, *MODELS[name].trusted_types}
