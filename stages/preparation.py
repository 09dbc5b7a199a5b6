"""Phase 2, data preparation: the holdout split and the (unfitted) preprocessor.

The preprocessor is never fitted here. It becomes the first step of every candidate's
`Pipeline`, so cross-validation refits it on each training fold and nothing is learnt
from rows a model is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stages.errors import DataError
from stages.understanding import CLASSIFICATION, DataProfile

MISSING_CATEGORY = "__missing__"


class Encoding(Protocol):
    """How categories are encoded: the config's `[preparation]` section has it.

    Attributes:
        rare_category_share: Share of rows below which a category is grouped as "infrequent".
        max_categories: Most one-hot columns per categorical feature.
    """

    @property
    def rare_category_share(self) -> float: ...

    @property
    def max_categories(self) -> int: ...


@dataclass(frozen=True)
class Split:
    """Labelled rows split into a training part (for CV) and an untouched holdout.

    Attributes:
        X_train: Features of the training part.
        y_train: Target of the training part.
        X_test: Features of the holdout.
        y_test: Target of the holdout.
    """

    X_train: pd.DataFrame
    y_train: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series


def features_and_target(data: pd.DataFrame, profile: DataProfile) -> tuple[pd.DataFrame, pd.Series]:
    """Select the labelled rows, the feature columns and the target, as new objects.

    Args:
        data: The whole data set. It is not modified.
        profile: The data profile (which columns are features, which is the target).

    Returns:
        `(X, y)`, rows with a missing target left out, index reset, features conformed
        by `conform_features`; class labels of mixed Python types become text.
    """
    labelled = data[data[profile.target].notna()].reset_index(drop=True)
    X = conform_features(labelled, profile.features, profile.numeric_features)
    y = labelled[profile.target]
    if profile.task in CLASSIFICATION and y.dtype == object:
        # Class labels of mixed Python types (True with None, 1 with "a") are not a label
        # type scikit-learn knows; as text they are.
        y = y.astype(str)
    return X, y


def conform_features(frame: pd.DataFrame, features: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    """The feature columns of `frame`, in training order and types, as a new frame.

    Numeric features become float64, so that a missing value at prediction time does not
    change a column's type (an integer column with a gap is a float column in pandas).
    The other features become text with missing values kept, so that booleans, numbers
    and strings mixed in one column encode alike. Training and scoring both use this, so
    a model sees the same types in both.

    Args:
        frame: Data holding at least the feature columns. It is not modified.
        features: Feature names, in training order.
        numeric: The numeric ones among them.

    Returns:
        The features.
    """
    numeric_set = set(numeric)
    types = {c: ("float64" if c in numeric_set else str) for c in features}
    # `astype` with one type per column leaves one block per column; `copy` merges them, so
    # every later step (each fold's transform, each prediction) does not pay per column:
    # on 3,000 columns a prediction is three times slower on the unmerged frame. Plain
    # object column names, too: sklearn walks the names on every call, and a pyarrow-backed
    # name index is slow to walk.
    out = frame.loc[:, list(features)].astype(types).copy()
    out.columns = pd.Index(list(features), dtype=object)
    return out


def split_holdout(X: pd.DataFrame, y: pd.Series, task: str, holdout: float, seed: int) -> Split:
    """Split labelled rows into training and holdout parts.

    Args:
        X: Features.
        y: Target.
        task: The task; classification splits are stratified by class.
        holdout: Share of rows for the holdout.
        seed: Random seed for the shuffle.

    Returns:
        The split.

    Raises:
        DataError: A class has too few rows to appear on both sides.
    """
    stratify = y if task in CLASSIFICATION else None
    if stratify is not None:
        counts = y.value_counts()
        if counts.min() < 2:
            raise DataError(
                f"class '{counts.idxmin()}' of target '{y.name}' has only {counts.min()} row; "
                "every class needs at least 2 rows for a stratified holdout; add rows or merge rare classes"
            )
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=holdout, random_state=seed, shuffle=True, stratify=stratify
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(y)} labelled rows into a {holdout:.0%} holdout ({exc}); add rows or change --holdout"
        ) from None
    return Split(X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test)


def build_preprocessor(profile: DataProfile, encoding: Encoding) -> ColumnTransformer:
    """An unfitted preprocessor for the profiled features.

    Numeric columns: median imputation, then standard scaling. Categorical columns: missing
    values become their own category, then one-hot encoding in which categories rarer than
    `rare_category_share` are grouped as "infrequent", at most `max_categories` columns are
    made per feature, and categories unseen in training are encoded as infrequent (or as
    all zeros when no category was infrequent).

    Args:
        profile: The data profile.
        encoding: The share below which a category is grouped and the most one-hot columns
            per feature (`Encoding`).

    Returns:
        The unfitted `ColumnTransformer`.
    """
    rare_category_share, max_categories = encoding.rare_category_share, encoding.max_categories
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            (
                "onehot",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    min_frequency=rare_category_share or None,
                    max_categories=max_categories,
                    sparse_output=False,
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, list(profile.numeric_features)),
            ("categorical", categorical, list(profile.categorical_features)),
        ],
        remainder="drop",
    )
