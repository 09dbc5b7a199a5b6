"""CRISP-DM phase 5, evaluation: does the chosen model hold on the holdout, and does it meet the business goal?

- `evaluate_holdout` scores the chosen candidate on the untouched holdout and flags a
  holdout score far outside its cross-validated spread; `permutation_importances` says
  which input columns it relies on; `measure_footprint` times and sizes it.
- `decide` is the go/no-go gate: every business criterion written down before training
  must hold on the holdout, else no-go with each failed criterion named.

Choosing the candidate (the selection rule) lives in `stages.selection`; its names are
re-exported here.
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from stages.metrics import METRICS, Metric, metrics_for, score_all
from stages.modeling import CandidateResult, predict_with_proba
from stages.preparation import Split
from stages.selection import (  # noqa: F401  (re-exported: the selection used to live here)
    BASELINE,
    BEST_MEAN,
    DEPRECATED_RULES,
    SELECTION_RULES,
    SIMPLEST_EQUIVALENT,
    SIMPLEST_WITHIN_NOISE,
    Comparison,
    LossPosterior,
    PairedTest,
    Selection,
    annotated_leaderboard,
    corrected_ttest,
    loss_posterior,
    select_model,
)
from stages.understanding import CLASSIFICATION

GO = "go"
NO_GO = "no-go"


@dataclass(frozen=True)
class Evaluation:
    """The chosen candidate's holdout scores next to its cross-validated ones.

    Attributes:
        model: The candidate's short name.
        metric: The primary metric.
        holdout: `{metric: score on the holdout}`, for every metric of the task.
        cv_mean: `{metric: mean cross-validated score}`.
        cv_std: `{metric: standard deviation over folds}`.
        n_train: Rows the model was fitted on.
        n_test: Rows in the holdout.
        y_true: Holdout targets.
        y_pred: Holdout predictions.
        proba: Holdout class probabilities (columns follow `classes`), or None.
        classes: Class labels, or None for regression.
        fitted: The pipeline fitted on the training part (it never saw the holdout).
        warnings: The holdout score is far outside the cross-validated spread, and why
            that matters; empty when it is not.
        predict_seconds: How long the fitted pipeline took to predict the holdout (labels and,
            for a classifier, probabilities) from raw columns: about what one shuffle of
            permutation importance costs.
    """

    model: str
    metric: str
    holdout: dict[str, float]
    cv_mean: dict[str, float]
    cv_std: dict[str, float]
    n_train: int
    n_test: int
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None
    classes: np.ndarray | None
    fitted: Any = None
    warnings: tuple[str, ...] = ()
    predict_seconds: float = math.nan


def evaluate_holdout(
    candidate: CandidateResult,
    pipeline: Pipeline,
    split: Split,
    task: str,
    metric: str,
    tolerance_sd: float = 3.0,
) -> Evaluation:
    """Refit the candidate on the whole training part and score it on the holdout.

    Args:
        candidate: The candidate's cross-validation result.
        pipeline: Its unfitted pipeline (a clone is fitted).
        split: Training part and holdout.
        task: The task.
        metric: The primary metric.
        tolerance_sd: Flag a holdout score further than this many expected standard
            deviations from the cross-validated mean (see `holdout_warnings`).

    Returns:
        The evaluation.
    """
    classes = _classes(split, task)
    model = clone(pipeline).fit(split.X_train, split.y_train)
    pred, proba, predict_seconds = _timed_prediction(model, split.X_test, classes)
    y_true = split.y_test.to_numpy()
    metrics = metrics_for(task)
    holdout = score_all(metrics, y_true, pred, proba, classes)
    folds = candidate.fold_scores.get(metric, ())
    fold_test_rows = len(split.y_train) / len(folds) if folds else math.nan
    return Evaluation(
        model=candidate.name,
        metric=metric,
        holdout=holdout,
        cv_mean={m.name: candidate.mean(m.name) for m in metrics},
        cv_std={m.name: candidate.std(m.name) for m in metrics},
        n_train=len(split.y_train),
        n_test=len(y_true),
        y_true=y_true,
        y_pred=np.asarray(pred),
        proba=proba,
        classes=classes,
        fitted=model,
        warnings=holdout_warnings(METRICS[metric], holdout[metric], folds, fold_test_rows, len(y_true), tolerance_sd),
        predict_seconds=predict_seconds,
    )


def _timed_prediction(model: Any, X: pd.DataFrame, classes: np.ndarray | None) -> tuple[Any, Any, float]:
    """`predict_with_proba`, and the seconds it took."""
    started = time.perf_counter()
    pred, proba = predict_with_proba(model, X, classes)
    return pred, proba, time.perf_counter() - started


def assess_on_holdout(
    candidate: CandidateResult,
    pipeline: Pipeline,
    split: Split,
    task: str,
    metric: str,
    tolerance_sd: float,
    seed: int,
) -> tuple[Evaluation, Importance]:
    """`evaluate_holdout`, then the fitted model's `permutation_importances` on the holdout: one unit of work.

    Args:
        candidate: The chosen candidate's cross-validation result.
        pipeline: Its unfitted pipeline.
        split: Training part and holdout.
        task: The task.
        metric: The primary metric.
        tolerance_sd: See `evaluate_holdout`.
        seed: Seed of the importance shuffles.

    Returns:
        The evaluation and the importances.
    """
    result = evaluate_holdout(candidate, pipeline, split, task, metric, tolerance_sd)
    # Budgeted by timed predictions of the holdout, raw columns in, so on wide data the
    # preprocessing each shuffle repeats is counted (the folds' predict times leave it out).
    # A holdout larger than the shuffles use is timed again on as many rows as they use: a
    # prediction's cost is not proportional to its rows (on wide data it is mostly fixed).
    n_test, n_features = len(split.y_test), split.X_test.shape[1]
    per_call = result.predict_seconds
    if n_test > IMPORTANCE_ROWS[1]:
        sample = split.X_test.sample(n=IMPORTANCE_ROWS[1], random_state=seed)
        per_call = _timed_prediction(result.fitted, sample, result.classes)[2]
    columns = importance_columns(per_call, n_features)
    rows = importance_rows(result.predict_seconds, n_test, columns)
    importance = permutation_importances(
        result.fitted, split.X_test, split.y_test, metric, result.classes, seed, max_rows=rows, max_columns=columns
    )
    return result, importance


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


def score_on_holdout(pipeline: Pipeline, split: Split, task: str) -> dict[str, float]:
    """Fit a clone of a pipeline on the training part and score it on the holdout.

    The gate uses it for the baseline, so that the margin over the baseline compares
    two scores on the same rows.

    Args:
        pipeline: An unfitted pipeline.
        split: Training part and holdout.
        task: The task.

    Returns:
        `{metric: holdout score}` for every metric of the task.
    """
    classes = _classes(split, task)
    model = clone(pipeline).fit(split.X_train, split.y_train)
    pred, proba = predict_with_proba(model, split.X_test, classes)
    return score_all(metrics_for(task), split.y_test.to_numpy(), pred, proba, classes)


def _classes(split: Split, task: str) -> np.ndarray | None:
    return np.unique(split.y_train.to_numpy()) if task in CLASSIFICATION else None


def holdout_warnings(
    metric: Metric,
    holdout: float,
    fold_scores: Sequence[float],
    fold_test_rows: float,
    n_test: int,
    tolerance_sd: float,
) -> tuple[str, ...]:
    """Flag a holdout score far outside the spread of the cross-validated scores.

    The spread of the fold scores estimates how much a score on `fold_test_rows` rows
    varies; a score on `n_test` rows varies by `sqrt(fold_test_rows / n_test)` as much.
    It is never taken below one holdout row's share of the metric's range, so that folds
    that all scored 1.0 do not make a single holdout error a "surprise".

    Args:
        metric: The primary metric.
        holdout: Its holdout score.
        fold_scores: The chosen candidate's per-fold scores.
        fold_test_rows: Rows in each test fold (mean).
        n_test: Rows in the holdout.
        tolerance_sd: How many expected standard deviations are tolerated.

    Returns:
        One warning, or none.
    """
    scores = np.asarray(fold_scores, dtype=float)
    if len(scores) < 2 or math.isnan(holdout) or np.isnan(scores).any() or n_test < 1:
        return ()
    mean, sd = float(scores.mean()), float(scores.std(ddof=1))
    low, high = metric.bounds
    scale = high - low if math.isfinite(high - low) else max(abs(mean), 1e-12)
    expected = max(sd * math.sqrt(fold_test_rows / n_test), scale / n_test)
    z = metric.better(holdout, mean) / expected
    if abs(z) <= tolerance_sd:
        return ()
    where = (
        f"holdout {metric.name} {holdout:.4f} is {abs(z):.1f} expected standard deviations "
        f"{'worse' if z < 0 else 'better'} than the cross-validated {mean:.4f} ± {sd:.4f}"
    )
    if z < 0:
        return (f"{where}: the model may be overfitted to the folds, or the holdout differs from the training data (a distribution shift)",)
    return (f"{where}: the holdout may be easier than the training data (a lucky split or a distribution shift); do not rely on the holdout score alone",)


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


@dataclass(frozen=True)
class Footprint:
    """What the final model costs to run and to keep.

    Attributes:
        ms_per_row: Milliseconds per row to predict the holdout in one batch (median of repeats).
        model_mb: Size of the pickled model in MB (10^6 bytes).
    """

    ms_per_row: float
    model_mb: float


def measure_footprint(model: Any, X: pd.DataFrame, repeats: int = 3, max_rows: int = 2000) -> Footprint:
    """Time the model's batch prediction and measure its serialised size.

    Args:
        model: The fitted model.
        X: Rows to predict (the holdout).
        repeats: Timed repeats; the median is kept.
        max_rows: Time a batch of at most this many rows (the first ones).

    Returns:
        The footprint.
    """
    X = X.head(max_rows)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(X)
        times.append(time.perf_counter() - start)
    size = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return Footprint(ms_per_row=statistics.median(times) * 1000.0 / max(len(X), 1), model_mb=size / 1e6)


@dataclass(frozen=True)
class Check:
    """One business criterion, checked.

    Attributes:
        criterion: The config key (`min_score`, `min_margin_over_baseline`, ...).
        passed: Whether it holds.
        value: The measured value.
        threshold: The configured limit.
        detail: One sentence saying what was measured against what.
    """

    criterion: str
    passed: bool
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class Decision:
    """The go/no-go gate's verdict.

    Attributes:
        go: True when every criterion holds.
        reasons: The failed criteria, one sentence each (empty on go).
        checks: Every criterion checked, passed or not.
    """

    go: bool
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]

    @property
    def label(self) -> str:
        """`go` or `no-go`."""
        return GO if self.go else NO_GO

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON-friendly values."""
        return {"decision": self.label, "go": self.go, "reasons": list(self.reasons), "checks": [asdict(c) for c in self.checks]}


def decide(
    metric: str,
    holdout: float,
    baseline_holdout: float,
    footprint: Footprint,
    *,
    min_score: float | None = None,
    min_margin_over_baseline: float = 0.0,
    max_latency_ms_per_row: float | None = None,
    max_model_mb: float | None = None,
) -> Decision:
    """The go/no-go gate: check the business criteria against the holdout evaluation.

    Args:
        metric: The primary metric.
        holdout: The chosen model's holdout score.
        baseline_holdout: The baseline's holdout score on the same rows.
        footprint: The final model's prediction time and size.
        min_score: Worst acceptable holdout score (highest, for lower-is-better metrics), or None.
        min_margin_over_baseline: The model must beat the baseline by more than this.
        max_latency_ms_per_row: Most milliseconds per row, or None.
        max_model_mb: Largest model in MB, or None.

    Returns:
        The decision: go only if every check passes.
    """
    m = METRICS[metric]
    checks = []
    if min_score is not None:
        ok = not math.isnan(holdout) and m.better(holdout, min_score) >= 0
        bound = "lowest" if m.greater_is_better else "highest (lower is better)"
        verb = "meets" if ok else "fails"
        checks.append(
            Check("min_score", ok, holdout, min_score, f"holdout {metric} {holdout:.4f} {verb} min_score {min_score:g}, the {bound} acceptable")
        )
    margin = m.better(holdout, baseline_holdout)
    ok = not math.isnan(margin) and margin > min_margin_over_baseline
    checks.append(
        Check(
            "min_margin_over_baseline",
            ok,
            margin,
            min_margin_over_baseline,
            f"holdout {metric} {holdout:.4f} {'beats' if margin > 0 else 'does not beat'} the baseline's "
            f"{baseline_holdout:.4f} by {margin:.4f}; more than {min_margin_over_baseline:g} is required",
        )
    )
    if max_latency_ms_per_row is not None:
        ok = footprint.ms_per_row <= max_latency_ms_per_row
        checks.append(
            Check(
                "max_latency_ms_per_row",
                ok,
                footprint.ms_per_row,
                max_latency_ms_per_row,
                f"prediction takes {footprint.ms_per_row:.4f} ms per row; at most {max_latency_ms_per_row:g} is allowed",
            )
        )
    if max_model_mb is not None:
        ok = footprint.model_mb <= max_model_mb
        checks.append(
            Check(
                "max_model_mb",
                ok,
                footprint.model_mb,
                max_model_mb,
                f"the model is {footprint.model_mb:.3f} MB; at most {max_model_mb:g} is allowed",
            )
        )
    reasons = tuple(c.detail for c in checks if not c.passed)
    return Decision(go=not reasons, reasons=reasons, checks=tuple(checks))
