import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.validation import check_is_fitted

from stages.evaluation import evaluate_holdout
from stages.modeling import ModelSettings, build_candidates, compare_models, make_folds
from stages.preparation import build_preprocessor, features_and_target, split_holdout
from stages.understanding import profile_data


def test_holdout_scores_the_best_candidate_on_rows_it_never_saw(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    split = split_holdout(X, y, profile.task, 0.25, seed=0)
    candidates = build_candidates(["baseline", "linear"], build_preprocessor(profile, 0.01, 20), ModelSettings("binary", 0))
    board = compare_models(candidates, split.X_train, split.y_train, make_folds(split.y_train, "binary", 3, 0), "binary", "balanced_accuracy", 1)
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
