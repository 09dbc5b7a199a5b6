"""Evaluation on the holdout: scores on unseen rows, surprises against cross-validation, timing and size."""

import math

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.validation import check_is_fitted

from pipeline.settings import PreparationConfig
from stages.evaluation import evaluate_holdout, holdout_warnings, measure_footprint
from stages.metrics import METRICS
from stages.model_registry import ModelSettings, build_candidates
from stages.modeling import OK, CandidateResult, compare_models, make_folds
from stages.preparation import build_preprocessor, features_and_target, split_holdout
from stages.understanding import profile_data

from frames import wide_frame


def test_holdout_scores_the_best_candidate_on_rows_it_never_saw(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    split = split_holdout(X, y, profile.task, 0.25, seed=0)
    candidates = build_candidates(["baseline", "linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))
    board = compare_models(candidates, split.X_train, split.y_train, make_folds(split.y_train, "binary", 3, 0), "binary", "balanced_accuracy")
    best = board.best
    result = evaluate_holdout(best, candidates[best.name], split, "binary", "balanced_accuracy")
    assert result.model == "linear"
    assert result.n_train == 45 and result.n_test == 15
    assert result.holdout["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(result.y_true, result.y_pred))
    assert list(result.classes) == ["no", "yes"] and result.proba.shape == (15, 2)
    assert np.allclose(result.proba.sum(axis=1), 1.0)
    assert result.cv_mean["balanced_accuracy"] == pytest.approx(best.mean("balanced_accuracy"))
    with pytest.raises(NotFittedError):  # evaluation fits a clone, never the candidate itself
        check_is_fitted(candidates["linear"])


def test_a_holdout_score_far_outside_the_cv_spread_is_flagged():
    folds = [0.90, 0.92, 0.88, 0.91, 0.89]  # mean 0.90, sd 0.0158
    metric = METRICS["balanced_accuracy"]
    assert holdout_warnings(metric, 0.89, folds, 50, 50, 3.0) == ()
    (low,) = holdout_warnings(metric, 0.70, folds, 50, 50, 3.0)
    assert "worse than the cross-validated 0.9000" in low and "overfitted" in low and "distribution shift" in low
    (high,) = holdout_warnings(metric, 0.999, folds, 50, 50, 3.0)
    assert "better" in high and "lucky split" in high
    # Folds that all scored 1.0 do not make one wrong holdout row (of 50) a surprise...
    assert holdout_warnings(metric, 0.98, [1.0] * 5, 50, 50, 3.0) == ()
    # ...but five wrong rows are.
    assert holdout_warnings(metric, 0.90, [1.0] * 5, 50, 50, 3.0)
    # Lower is better: a much higher rmse is the bad direction.
    (rmse,) = holdout_warnings(METRICS["rmse"], 400.0, [300.0, 310.0, 290.0, 305.0, 295.0], 50, 50, 3.0)
    assert "worse" in rmse


def test_holdout_evaluation_carries_the_flag(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    split = split_holdout(X, y, profile.task, 0.25, seed=0)
    candidates = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))
    folds = make_folds(split.y_train, "binary", 3, 0)
    row = compare_models(candidates, split.X_train, split.y_train, folds, "binary", "balanced_accuracy").rows[0]
    # Pretend the folds scored far worse than the holdout will: the evaluation must say so.
    pessimistic = CandidateResult("linear", "LogisticRegression", {}, OK, fold_scores={"balanced_accuracy": (0.30, 0.32, 0.31)})
    assert evaluate_holdout(row, candidates["linear"], split, "binary", "balanced_accuracy").warnings == ()
    flagged = evaluate_holdout(pessimistic, candidates["linear"], split, "binary", "balanced_accuracy")
    assert len(flagged.warnings) == 1 and "better than the cross-validated" in flagged.warnings[0]
    check_is_fitted(flagged.fitted)


def test_measure_footprint_times_prediction_and_sizes_the_model(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    models = build_candidates(["linear", "random_forest"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))
    linear = measure_footprint(models["linear"].fit(X, y), X)
    forest = measure_footprint(models["random_forest"].fit(X, y), X)
    assert 0 < linear.ms_per_row < 100 and 0 < linear.model_mb < forest.model_mb


def test_holdout_evaluation_times_the_whole_pipeline_for_the_importance_budget(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    split = split_holdout(X, y, profile.task, 0.25, 0)
    model = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))["linear"]
    row = CandidateResult("linear", "LogisticRegression", {}, OK, fold_scores={"roc_auc": (0.5,) * 5}, predict_seconds=math.nan)
    result = evaluate_holdout(row, model, split, profile.task, "roc_auc")
    assert 0 < result.predict_seconds < 60


def test_a_holdout_bigger_than_the_shuffles_is_timed_again_on_as_many_rows_as_they_use(monkeypatch):
    # A prediction's cost is not proportional to its rows (on wide data it is mostly fixed),
    # so the column budget is judged by a prediction of the rows the shuffles will use.
    from stages import evaluation, importance
    from stages.evaluation import assess_on_holdout
    from stages.importance import IMPORTANCE_ROWS

    X, y, _ = wide_frame(2600, 4, "binary")
    data = X.assign(target=y)
    profile = profile_data(data, "target")
    features, target = features_and_target(data, profile)
    split = split_holdout(features, target, profile.task, 0.5, 0)
    model = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings(profile.task, 0))["linear"]
    row = CandidateResult("linear", "LogisticRegression", {}, OK, fold_scores={"roc_auc": (0.5,) * 5})
    events = []
    predict, permute = evaluation.predict_with_proba, importance.permutation_importances

    def counting(model_, X_, classes):
        events.append(("predict", len(X_)))
        return predict(model_, X_, classes)

    def permuting(*args, **kwargs):
        events.append(("permute", kwargs["max_rows"]))
        return permute(*args, **kwargs)

    monkeypatch.setattr(evaluation, "predict_with_proba", counting)
    monkeypatch.setattr(evaluation, "permutation_importances", permuting)
    assess_on_holdout(row, model, split, profile.task, "roc_auc", 3.0, 0)
    # The holdout, then a prediction of the shuffles' size, before any shuffle.
    assert events[:2] == [("predict", len(split.y_test)), ("predict", IMPORTANCE_ROWS[1])] and events[2][0] == "permute"
