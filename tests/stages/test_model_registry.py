"""The model registry: the seven candidates, what each does about data size, their complexity order and the types skops trusts."""

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from stages import model_registry
from stages.early_stopping import EarlyStoppingClassifier
from stages.model_registry import COMMON_TRUSTED_TYPES, MODELS, ModelSettings, build_candidates
from stages.modeling import compare_models, make_folds


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


def test_svr_learns_a_target_far_from_unit_scale():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200)})
    y = pd.Series(4000 + 800 * X["a"] + rng.normal(scale=50, size=200), name="grams")
    candidates = {"svm": Pipeline([("prepare", StandardScaler()), ("model", MODELS["svm"].build(ModelSettings("regression", 0)))])}
    board = compare_models(candidates, X, y, make_folds(y, "regression", 3, 0), "regression", "r2")
    assert board.rows[0].mean("r2") > 0.9, board.rows[0].error


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_costly_candidates_change_strategy_above_their_row_thresholds(task):
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


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_entry_declares_the_types_its_fitted_model_needs_skops_to_trust(name, task):
    """Without them the model fails to save at the end of a run: the entry, not a list elsewhere, names them."""
    X, y = make_classification(n_samples=120, n_features=4, n_informative=3, n_redundant=0, n_classes=3 if task == "multiclass" else 2, random_state=0)
    target = X[:, 0] * 3 + X[:, 1] if task == "regression" else y
    model = MODELS[name].build(ModelSettings(task=task, seed=0, n_rows=len(target))).fit(X, target)
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(model)))
    assert untrusted <= {*COMMON_TRUSTED_TYPES, *MODELS[name].trusted_types}
