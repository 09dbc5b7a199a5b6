"""Phase 4, evaluation: does the chosen model hold on the holdout?

`evaluate_holdout` scores the chosen candidate on the untouched holdout and flags a holdout
score far outside its cross-validated spread; `assess_on_holdout` adds its permutation
importance (`stages.importance`); `measure_footprint` times and sizes it. Choosing the
candidate is `stages.selection`; the go/no-go gate is `stages.gate`.
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from stages.fold_fits import predict_with_proba
from stages.importance import IMPORTANCE_ROWS, Importance, importance_columns, importance_rows, permutation_importances
from stages.metrics import METRICS, Metric, metrics_for, score_all
from stages.modeling import CandidateResult
from stages.preparation import Split
from stages.understanding import CLASSIFICATION


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


