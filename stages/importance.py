"""Which input columns the chosen model relies on: permutation importance, bounded on wide data.

Columns are shuffled on the holdout, one raw input column at a time (one-hot columns count
as their raw column). The cost is bounded: a time share decides how many columns and rows
can be afforded, and on wider data a one-pass screen picks the columns to shuffle; the
report says what was capped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from stages.fold_fits import predict_with_proba
from stages.metrics import METRICS

IMPORTANCE_SECONDS = 2.0
"""About how long permutation importance may spend predicting, judged by the candidate's CV predict times."""
IMPORTANCE_ROWS = (100, 1000)
"""Fewest and most holdout rows permutation importance shuffles."""
MAX_IMPORTANCE_COLUMNS = 50
"""At most this many input columns are shuffled; on wider data a one-pass screen picks them.

Shuffling costs a prediction per column and repeat: on 3,000 columns that is 15,000
predictions of a pipeline that transforms 3,000 columns each time, minutes where the fits
took seconds. The screen (`_screen_columns`) ranks every column by how strongly the model's
holdout predictions vary with it, in one vectorised pass, and the first ones are shuffled.
"""


MIN_IMPORTANCE_COLUMNS = 10
"""Fewest input columns shuffled (when the data has them), however slow one prediction is."""


def importance_columns(seconds_per_call: float, n_features: int, n_repeats: int = 5) -> int:
    """How many input columns permutation importance can afford for this model.

    On wide data one prediction costs about the same whatever the rows, because the
    pipeline transforms every column each time: a linear model on 3,000 columns takes
    0.18 s to predict 60 rows. Each shuffled column costs `n_repeats` predictions, so the
    columns are capped to spend about `IMPORTANCE_SECONDS`, judged by a timed prediction
    of as many holdout rows as the shuffles use (at most the upper end of `IMPORTANCE_ROWS`),
    within `MIN_IMPORTANCE_COLUMNS` and `MAX_IMPORTANCE_COLUMNS`.

    Args:
        seconds_per_call: Seconds one prediction of the shuffled rows takes, raw columns in.
        n_features: Input columns in the data.
        n_repeats: Shuffles per column.

    Returns:
        The column count, at most `n_features`.
    """
    cap = MAX_IMPORTANCE_COLUMNS
    if math.isfinite(seconds_per_call) and seconds_per_call > 0:
        cap = int(min(MAX_IMPORTANCE_COLUMNS, max(MIN_IMPORTANCE_COLUMNS, IMPORTANCE_SECONDS / (seconds_per_call * n_repeats))))
    return min(n_features, cap)


def importance_rows(predict_seconds: float, n_test: int, n_features: int, n_repeats: int = 5) -> int:
    """How many holdout rows permutation importance can afford for this model.

    Each of `n_features * n_repeats` shuffles predicts every sampled row once. A model that
    predicts slowly (an exact kernel SVM with thousands of support vectors) gets fewer rows,
    so that the importances cost about `IMPORTANCE_SECONDS`, within `IMPORTANCE_ROWS`.

    Args:
        predict_seconds: Seconds to predict the `n_test` holdout rows, raw columns in.
        n_test: Rows of the holdout.
        n_features: Input columns, each shuffled `n_repeats` times.
        n_repeats: Shuffles per column.

    Returns:
        The row count.
    """
    lo, hi = IMPORTANCE_ROWS
    if n_test <= 0 or not math.isfinite(predict_seconds) or predict_seconds <= 0:
        return hi
    seconds_per_row = predict_seconds / n_test
    affordable = IMPORTANCE_SECONDS / (seconds_per_row * max(1, n_features) * n_repeats)
    return int(min(hi, max(lo, affordable)))


@dataclass(frozen=True)
class Importance:
    """Permutation importance of the raw input columns on the holdout.

    Attributes:
        metric: The metric whose drop is measured.
        features: Input columns, most important first.
        mean: Mean drop in the score when the column is shuffled (in the metric's units;
            positive means the model relies on it).
        std: Standard deviation of the drop over the repeats.
        n_columns: Input columns in the data (more than `features` when the screen capped them).
        note: What was capped, in words ("" when every column was shuffled).
    """

    metric: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_columns: int = 0
    note: str = ""

    def to_frame(self) -> pd.DataFrame:
        """One row per feature: `feature`, `importance_mean`, `importance_std`."""
        return pd.DataFrame({"feature": self.features, "importance_mean": self.mean, "importance_std": self.std})


def permutation_importances(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series,
    metric: str,
    classes: np.ndarray | None,
    seed: int,
    n_repeats: int = 5,
    max_rows: int = 1000,
    max_columns: int = MAX_IMPORTANCE_COLUMNS,
) -> Importance:
    """How much the holdout score drops when each input column is shuffled.

    The raw input columns are shuffled (not the one-hot columns the preprocessor makes),
    so each importance belongs to a column a person knows. On data wider than
    `max_columns`, only the columns that the model's predictions vary with most
    (`_screen_columns`) are shuffled, so the cost stays bounded; `note` says so.

    Args:
        model: A pipeline fitted on the training part only.
        X: Holdout features.
        y: Holdout target.
        metric: The primary metric.
        classes: Class labels, or None for regression.
        seed: Random seed for the shuffles and the row sample.
        n_repeats: Shuffles per column.
        max_rows: At most this many holdout rows (sampled) to keep it cheap.
        max_columns: At most this many columns shuffled.

    Returns:
        The importances, most important first.
    """
    m = METRICS[metric]
    if len(X) > max_rows:
        X = X.sample(n=max_rows, random_state=seed)
        y = y.loc[X.index]

    def scorer(estimator: Any, X_: pd.DataFrame, y_: pd.Series) -> float:
        # predict_proba costs a second pass through the pipeline; only metrics on probabilities need it.
        pred, proba = predict_with_proba(estimator, X_, classes) if m.needs_proba else (estimator.predict(X_), None)
        value = m.score(np.asarray(y_), pred, proba, classes)
        return value if m.greater_is_better else -value

    columns, note = list(X.columns), ""
    if len(columns) > max_columns:
        columns = _screen_columns(model, X, classes, max_columns)
        note = (
            f"shuffled the {len(columns)} of {X.shape[1]} input columns that the model's holdout predictions vary "
            "with most (a one-pass screen); the others were not scored"
        )
    rest = X

    def scorer_of_subset(estimator: Any, X_: pd.DataFrame, y_: pd.Series) -> float:
        # The shuffled values written into a copy in place, by position: replacing columns
        # (`full[c] = ...`, or a concat and reorder) would split the frame into a block per
        # column, and every prediction on wide data would pay per column again.
        full = rest.copy()
        for j, column in zip(rest.columns.get_indexer(X_.columns), X_.columns):
            full.iloc[:, j] = X_[column].to_numpy()
        return scorer(estimator, full, y_)

    chosen = X[columns]
    score = scorer if len(columns) == X.shape[1] else scorer_of_subset
    result = permutation_importance(model, chosen, y, scoring=score, n_repeats=n_repeats, random_state=seed, n_jobs=1)
    order = np.argsort(-result.importances_mean, kind="stable")
    return Importance(
        metric=metric,
        features=tuple(str(chosen.columns[i]) for i in order),
        mean=tuple(float(result.importances_mean[i]) for i in order),
        std=tuple(float(result.importances_std[i]) for i in order),
        n_columns=X.shape[1],
        note=note,
    )


def _screen_columns(model: Any, X: pd.DataFrame, classes: np.ndarray | None, k: int) -> list[str]:
    """The `k` columns the model's predictions on `X` vary with most: one prediction, one pass over the columns.

    The signal is the prediction (regression) or the class probabilities (one-hot labels
    without them). A numeric column scores its largest absolute correlation with a signal
    column (missing cells at the column's median); any other column its correlation ratio
    (the share of the signal's spread between its categories, square-rooted).
    """
    if classes is None:
        signal = np.asarray(model.predict(X), dtype=float).reshape(len(X), -1)
    else:
        pred, proba = predict_with_proba(model, X, classes)
        signal = proba if proba is not None else (np.asarray(pred)[:, None] == np.asarray(classes)[None, :]).astype(float)
    signal = signal - signal.mean(axis=0)
    spread = np.sqrt((signal**2).sum(axis=0))
    spread[spread == 0] = np.inf
    scores = np.zeros(X.shape[1])
    numeric = [i for i, c in enumerate(X.columns) if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])]
    if numeric:
        values = X.iloc[:, numeric].to_numpy(dtype=float, na_value=np.nan)
        values = np.where(np.isnan(values), np.nanmedian(values, axis=0), values)
        values = np.nan_to_num(values - values.mean(axis=0))
        norms = np.sqrt((values**2).sum(axis=0))
        norms[norms == 0] = np.inf
        scores[numeric] = np.abs((values.T @ signal) / norms[:, None] / spread[None, :]).max(axis=1)
    for i in sorted(set(range(X.shape[1])) - set(numeric)):
        groups = pd.Series(X.iloc[:, i].astype(str).to_numpy())
        means = pd.DataFrame(signal).groupby(groups.to_numpy()).transform("mean").to_numpy()
        scores[i] = float(np.sqrt(((means**2).sum(axis=0) / spread**2).max()))
    order = np.argsort(-scores, kind="stable")[:k]
    return [X.columns[i] for i in sorted(order)]
