import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from pipeline.errors import DataError
from pipeline.settings import PreparationConfig
from stages.preparation import build_preprocessor, conform_features, features_and_target, split_holdout
from stages.understanding import profile_data


def test_features_and_target_drop_unlabelled_rows_and_conform_types(mixed_frame):
    frame = mixed_frame.copy()
    frame.loc[0, "label"] = None
    profile = profile_data(frame, "label")
    X, y = features_and_target(frame, profile)
    assert len(X) == len(y) == 59
    assert list(X.columns) == ["x1", "x2", "colour"]
    assert X["x1"].dtype == "float64"
    assert X["colour"].isna().sum() == 1  # missing stays missing, not the text "nan"


def test_conform_features_orders_and_types_columns_without_touching_input():
    frame = pd.DataFrame({"b": ["u", None], "extra": [1, 2], "a": [1, 2]})
    before = frame.copy()
    X = conform_features(frame, ("a", "b"), ("a",))
    assert list(X.columns) == ["a", "b"]
    assert X["a"].dtype == "float64"
    pd.testing.assert_frame_equal(frame, before)


def test_conform_features_returns_a_merged_frame_on_wide_data():
    # One block per column (what `astype` with a type per column leaves) makes every later
    # transform and prediction pay per column; the frame comes back as one block per type.
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 500)), columns=[f"x{i}" for i in range(500)])
    frame["t"] = "a"
    X = conform_features(frame, tuple(frame.columns), tuple(frame.columns[:-1]))
    assert X._mgr.nblocks == 2  # pandas has no public block count; the float block and the text one
    assert X.columns.dtype == object and list(X.columns) == list(frame.columns)


def test_split_is_stratified_and_sized(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    split = split_holdout(X, y, profile.task, 0.25, seed=1)
    assert len(split.y_test) == 15 and len(split.y_train) == 45
    assert abs(split.y_test.eq("yes").mean() - y.eq("yes").mean()) < 0.07
    assert set(split.X_train.index).isdisjoint(split.X_test.index)


def test_split_is_reproducible(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    a = split_holdout(X, y, profile.task, 0.2, seed=3)
    b = split_holdout(X, y, profile.task, 0.2, seed=3)
    assert list(a.X_test.index) == list(b.X_test.index)


def test_a_class_with_one_row_cannot_be_stratified():
    X = pd.DataFrame({"x": range(10)})
    y = pd.Series(["a"] * 5 + ["b"] * 4 + ["c"], name="y")
    with pytest.raises(DataError, match="class 'c' of target 'y' has only 1 row"):
        split_holdout(X, y, "multiclass", 0.2, seed=0)


def test_preprocessor_is_unfitted_and_encodes_rare_and_unseen_categories(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    pre = build_preprocessor(profile, PreparationConfig(rare_category_share=0.05))
    with pytest.raises(NotFittedError):
        check_is_fitted(pre)
    X, _ = features_and_target(mixed_frame, profile)
    out = pre.fit_transform(X)
    assert not np.isnan(out).any()
    names = list(pre.get_feature_names_out())
    assert "categorical__colour_infrequent_sklearn" in names  # 'green' (1 row) and the missing cell
    unseen = X.head(1).assign(colour="purple")
    assert pre.transform(unseen).shape == (1, out.shape[1])


def test_a_padded_target_label_is_one_class_after_cleaning():
    from stages.cleaning import clean_data

    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"x": rng.normal(size=40), "y": ["yes", " yes", "yes ", "no", "no ", "?"] * 6 + ["no"] * 4})
    cleaned = clean_data(raw, "y")
    profile = profile_data(cleaned.frame, "y", cleaning=cleaned.report)
    X, y = features_and_target(cleaned.frame, profile)
    assert profile.task == "binary" and sorted(y.unique()) == ["no", "yes"]
    assert len(y) == 34 and profile.target_missing == 6  # '?' is a missing label: the row is dropped
