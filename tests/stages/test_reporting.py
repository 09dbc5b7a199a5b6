"""Plots and reports: evaluation plots for every task, cross-validated scores, importance, loss curves, and the HTML reports."""

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.compose import TransformedTargetRegressor
from sklearn.neural_network import MLPRegressor

from pipeline.settings import EvaluationConfig, PreparationConfig
from stages import reporting
from stages.evaluation import evaluate_holdout
from stages.importance import Importance, permutation_importances
from stages.model_registry import MODELS, ModelSettings, build_candidates
from stages.modeling import OK, CandidateResult, Leaderboard, compare_models, make_folds
from stages.preparation import build_preprocessor, features_and_target, split_holdout
from stages.selection import select_model
from stages.understanding import profile_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(data: bytes) -> np.ndarray:
    """A PNG that decodes to a real picture: not empty, not one flat colour."""
    assert data[:8] == PNG_SIGNATURE
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # something was drawn
    return pixels


@pytest.fixture
def probabilities():
    rng = np.random.default_rng(0)
    classes = np.array(["a", "b", "c"])
    y = rng.choice(classes, size=90)
    proba = rng.dirichlet([1, 1, 1], size=90)
    proba[np.arange(90), np.searchsorted(classes, y)] += 1.0  # informative, not perfect
    proba /= proba.sum(axis=1, keepdims=True)
    return y, classes[proba.argmax(axis=1)], proba, classes


def test_multiclass_plots_are_one_vs_rest_pngs(probabilities):
    y, pred, proba, classes = probabilities
    plots = reporting.classification_plots(y, pred, proba, classes)
    assert set(plots) == {"confusion_matrix.png", "roc_curve.png", "precision_recall.png", "calibration.png"}
    for png in plots.values():
        assert_png(png)


def test_binary_plots_and_a_model_without_probabilities(probabilities):
    y, pred, proba, _ = probabilities
    binary_y = np.where(y == "a", "yes", "no")
    binary_proba = np.column_stack([1 - proba[:, 0], proba[:, 0]])
    plots = reporting.classification_plots(binary_y, np.where(pred == "a", "yes", "no"), binary_proba, np.array(["no", "yes"]))
    assert len(plots) == 4
    for png in plots.values():
        assert_png(png)
    assert set(reporting.classification_plots(binary_y, binary_y, None, np.array(["no", "yes"]))) == {"confusion_matrix.png"}


def test_regression_plots():
    rng = np.random.default_rng(0)
    y = rng.normal(size=80)
    plots = reporting.regression_plots(y, y + rng.normal(scale=0.3, size=80))
    assert set(plots) == {"predicted_vs_actual.png", "residuals.png"}
    for png in plots.values():
        assert_png(png)


def _row(name, scores):
    return CandidateResult(name, name, {}, OK, fold_scores={"r2": tuple(scores)}, predict_seconds=0.01)


def test_cv_score_box_plot_highlights_the_chosen_model():
    rows = (_row("mlp", [0.80, 0.84, 0.78]), _row("linear", [0.79, 0.83, 0.79]), _row("baseline", [0.0, -0.01, 0.0]))
    board = Leaderboard("regression", "r2", ("r2",), 3, rows)
    selection = select_model(board, EvaluationConfig(selection="simplest_within_noise"), 40, 20)
    pixels = assert_png(reporting.cv_scores_plot(board, selection))
    # The chosen box is drawn in the highlight colour (orange: high red, low blue).
    orange = (pixels[..., 0] > 0.9) & (pixels[..., 2] < 0.6) & (pixels[..., 1] > 0.6)
    assert orange.sum() > 50


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_importance_and_loss_curve_plots():
    importance = Importance("r2", ("x1", "x2", "colour"), (0.5, 0.1, 0.0), (0.05, 0.02, 0.01))
    assert_png(reporting.importance_plot(importance))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    mlp = MLPRegressor(hidden_layer_sizes=(4,), max_iter=30, random_state=0).fit(X, X[:, 0])
    assert_png(reporting.loss_curve_plot(reporting.training_curve(mlp)))
    early = MLPRegressor(hidden_layer_sizes=(4,), max_iter=30, early_stopping=True, random_state=0).fit(X, X[:, 0])
    curve = reporting.training_curve(early)
    assert len(curve.validation) == len(curve.loss) == early.n_iter_  # a validation score per epoch
    assert_png(reporting.loss_curve_plot(curve))
    assert reporting.training_curve(object()) is None  # not a network: no curve


def test_evaluation_plots_cover_the_task(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    split = split_holdout(X, y, profile.task, 0.25, seed=0)
    candidates = build_candidates(["baseline", "linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))
    folds = make_folds(split.y_train, "binary", 3, 0)
    board = compare_models(candidates, split.X_train, split.y_train, folds, "binary", "roc_auc")
    selection = select_model(board, EvaluationConfig(selection="simplest_within_noise"), 30, 15)
    result = evaluate_holdout(board.best, candidates[selection.chosen], split, "binary", "roc_auc")
    importance = permutation_importances(result.fitted, split.X_test, split.y_test, "roc_auc", result.classes, 0)
    plots = reporting.evaluation_plots(result, board, selection, importance, reporting.training_curve(result.fitted.steps[-1][1]))
    assert set(plots) == {
        "confusion_matrix.png", "roc_curve.png", "precision_recall.png", "calibration.png", "cv_scores.png", "permutation_importance.png",
    }  # no loss curve: the logistic regression is not a network
    for png in plots.values():
        assert_png(png)


@pytest.mark.parametrize("target", ["label", "x2"])
def test_understanding_plots_and_report(mixed_frame, target):
    profile = profile_data(mixed_frame, target)
    plots = reporting.understanding_plots(profile, mixed_frame[target].dropna())
    assert set(plots) == {"target_distribution.png", "missing_values.png"}
    for png in plots.values():
        assert_png(png)
    report = reporting.understanding_report(profile, plots)
    assert report.startswith(profile.to_markdown())
    assert "![Target distribution](target_distribution.png)" in report and "![Missing values](missing_values.png)" in report


def test_understanding_plots_without_missing_values():
    frame = pd.DataFrame({"x": np.arange(30.0) % 7, "y": ["a", "b", "c"] * 10})
    plots = reporting.understanding_plots(profile_data(frame, "y"), frame["y"])
    assert_png(plots["missing_values.png"])


def test_the_cv_plot_keeps_the_real_candidates_readable_when_the_baseline_is_far_below():
    from stages.reporting import cv_axis_limits

    scores = {"linear": (0.97, 0.98, 0.99), "svm": (0.96, 0.99, 0.98), "baseline": (0.33, 0.33, 0.34)}
    low, high = cv_axis_limits(scores)
    assert 0.9 < low < 0.96 and 0.99 < high < 1.0  # the baseline's 0.33 would make the boxes a sliver
    assert cv_axis_limits({"linear": (0.5, 0.6), "baseline": (0.55,)}) is None  # within the span: matplotlib's own axis
    assert cv_axis_limits({"linear": (0.5, 0.6)}) is None and cv_axis_limits({"baseline": (0.3,)}) is None


def test_an_html_report_holds_its_plots_and_renders_its_tables():
    import base64

    from stages.reporting import html_report

    png = b"\x89PNG\r\n\x1a\nnot really"
    page = html_report("Data <understanding>", "# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![plot](p.png)\n", {"p.png": png, "q.png": png})
    encoded = base64.b64encode(png).decode("ascii")
    assert page.startswith("<!DOCTYPE html>") and "<title>Data &lt;understanding&gt;</title>" in page
    assert "<table>" in page and "<td>1</td>" in page
    assert f'src="data:image/png;base64,{encoded}"' in page and 'src="p.png"' not in page  # no file beside it is needed
    assert page.count(encoded) == 2  # q.png, which the text does not link, is appended


def test_the_loss_curve_of_the_regression_mlp_is_drawn_from_inside_its_target_transformer():
    from stages.reporting import loss_curve_plot, training_curve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(250, 2))
    fitted = MODELS["mlp"].build(ModelSettings(task="regression", seed=0, n_rows=250)).fit(X, 100 * X[:, 0])
    assert isinstance(fitted, TransformedTargetRegressor)
    assert loss_curve_plot(training_curve(fitted)).startswith(b"\x89PNG")
    assert training_curve(MODELS["linear"].build(ModelSettings(task="regression", seed=0)).fit(X, X[:, 0])) is None
