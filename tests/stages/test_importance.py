"""Permutation importance: on the raw input columns, within a budget of rows and columns set by the model's prediction time."""

import math

import numpy as np
import pytest

from pipeline.settings import PreparationConfig
from stages.importance import (
    IMPORTANCE_ROWS,
    MAX_IMPORTANCE_COLUMNS,
    MIN_IMPORTANCE_COLUMNS,
    importance_columns,
    importance_rows,
    permutation_importances,
)
from stages.model_registry import ModelSettings, build_candidates
from stages.preparation import build_preprocessor, features_and_target
from stages.understanding import profile_data

from frames import wide_frame


def test_permutation_importance_names_the_raw_input_columns(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    model = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))["linear"].fit(X, y)
    importance = permutation_importances(model, X, y, "balanced_accuracy", np.array(["no", "yes"]), seed=0)
    assert set(importance.features) == {"x1", "x2", "colour"}  # not the one-hot columns
    assert importance.features[0] == "x1" and importance.mean[0] > 0.2  # the label is x1 plus noise
    assert importance.mean[0] >= importance.mean[1] >= importance.mean[2]
    assert list(importance.to_frame().columns) == ["feature", "importance_mean", "importance_std"]


def test_permutation_importance_shuffles_fewer_rows_for_a_model_that_predicts_slowly():
    fast = importance_rows(0.001, n_test=1600, n_features=20)  # 1,600 holdout rows in 1 ms
    slow = importance_rows(2.0, n_test=1600, n_features=20)  # 1.25 ms a row: 100 shuffles x 100 rows = 12.5 s, the floor
    middling = importance_rows(0.08, n_test=1600, n_features=20)  # 50 us a row: 400 rows cost 2 s
    assert fast == IMPORTANCE_ROWS[1] and slow == IMPORTANCE_ROWS[0] and middling == 400
    assert importance_rows(math.nan, n_test=1600, n_features=20) == IMPORTANCE_ROWS[1]


def test_permutation_importance_shuffles_fewer_columns_for_a_model_whose_every_prediction_is_slow():
    assert importance_columns(0.001, n_features=3000) == MAX_IMPORTANCE_COLUMNS  # cheap: the screen's cap
    assert importance_columns(0.2, n_features=3000) == MIN_IMPORTANCE_COLUMNS  # 0.2 s a prediction: the floor
    assert importance_columns(0.02, n_features=3000) == 20  # 5 shuffles x 20 columns x 0.02 s = 2 s
    assert importance_columns(0.2, n_features=4) == 4  # never more than there are
    assert importance_columns(math.nan, n_features=3000) == MAX_IMPORTANCE_COLUMNS


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_permutation_importance_on_a_wide_frame_shuffles_at_most_the_capped_columns_and_says_so(task):
    X, y, classes = wide_frame(300, 400, task)
    data = X.assign(target=y)
    profile = profile_data(data, "target")
    model = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings(profile.task, 0))["linear"]
    model.fit(X, y)
    metric = "r2" if task == "regression" else "roc_auc"
    importance = permutation_importances(model, X, y, metric, classes, seed=0, n_repeats=2, max_rows=300)
    assert len(importance.features) == MAX_IMPORTANCE_COLUMNS and importance.n_columns == 401
    assert f"the {MAX_IMPORTANCE_COLUMNS} of 401 input columns" in importance.note
    assert {"x3", "group"} <= set(importance.features)  # the screen keeps what the model uses, numeric or not
    assert importance.features[0] == "x3"
    # Under the cap every column is shuffled (on 60 of the columns: shuffling all 401 costs 802 predictions).
    few = X[["x3", "group", *[f"x{i}" for i in range(58) if i != 3]]]
    small = build_candidates(["linear"], build_preprocessor(profile_data(few.assign(target=y), "target"), PreparationConfig()),
                             ModelSettings(profile.task, 0))["linear"].fit(few, y)
    narrow = permutation_importances(small, few, y, metric, classes, seed=0, n_repeats=2, max_rows=300, max_columns=60)
    assert narrow.note == "" and len(narrow.features) == 59 and narrow.n_columns == 59
