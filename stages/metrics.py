"""The metrics candidates are scored with: a registry over `sklearn.metrics`.

Modeling (cross-validation) and evaluation (holdout) score with the same functions, so a
cross-validated score and a holdout score of the same name mean the same thing.

Each entry also says how a tolerance for practical equivalence is read for it (see
`Metric.tolerance`): in the metric's own units where its scale is fixed (r2, accuracy,
balanced accuracy, F1, ROC AUC), as a share of the best candidate's score where the
scale is the target's or the data's (rmse, mae, log loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from stages.understanding import BINARY, CLASSIFICATION, MULTICLASS, REGRESSION

DEFAULT_TOLERANCE = 0.005
"""The default tolerance for practical equivalence in a fixed-scale metric's units (0.5 points of accuracy)."""
DEFAULT_RELATIVE_TOLERANCE = 0.01
"""The default tolerance for a metric without a fixed scale: 1% of the best candidate's score."""


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: Short name, as used in config and on the leaderboard.
        tasks: The tasks it applies to.
        greater_is_better: Whether a higher score is better.
        needs_proba: Whether it scores class probabilities rather than labels.
        score: `(y_true, y_pred, proba, classes) -> float`.
        bounds: The lowest and highest score possible, for checking a configured threshold.
        relative_tolerance: Whether a tolerance for practical equivalence is a share of
            the best candidate's |mean score| (the metric's scale depends on the data: rmse,
            mae, log_loss) rather than an amount in the metric's units (see `tolerance`).
    """

    name: str
    tasks: tuple[str, ...]
    greater_is_better: bool
    needs_proba: bool
    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], float]
    bounds: tuple[float, float] = (0.0, 1.0)
    relative_tolerance: bool = False

    def better(self, a: float, b: float) -> float:
        """How much better score `a` is than score `b`: positive when `a` is better, whatever the direction.

        Args:
            a: A score.
            b: Another score of the same metric.

        Returns:
            `a - b` for a metric where higher is better, `b - a` where lower is better.
        """
        return a - b if self.greater_is_better else b - a

    def tolerance(
        self, top_score: float, absolute: float = DEFAULT_TOLERANCE, relative: float = DEFAULT_RELATIVE_TOLERANCE
    ) -> tuple[float, str]:
        """The largest loss against the best candidate that still counts as practically as good.

        Args:
            top_score: The best candidate's mean score.
            absolute: The tolerance in the metric's units, for a metric whose scale is fixed.
            relative: The tolerance as a share of `|top_score|`, for a metric with
                `relative_tolerance` (a NaN or infinite `top_score` gives 0).

        Returns:
            The tolerance in the metric's units, and how it was derived, in words
            (`0.005 balanced_accuracy` or `1% of the top one's 290.3 rmse = 2.903`).
        """
        if not self.relative_tolerance:
            return absolute, f"{absolute:g} {self.name}"
        value = relative * abs(top_score) if math.isfinite(top_score) else 0.0
        return value, f"{relative * 100:.3g}% of the top one's {abs(top_score):.6g} {self.name} = {value:.4g}"


def _roc_auc(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> float:
    if proba is None or classes is None:
        return float("nan")
    if len(classes) == 2:
        return float(skm.roc_auc_score(y == classes[1], proba[:, 1]))
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))


def _log_loss(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> float:
    if proba is None or classes is None:
        return float("nan")
    return float(skm.log_loss(y, proba, labels=classes))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("r2", (REGRESSION,), True, False, lambda y, p, _pr, _c: float(skm.r2_score(y, p)), (-math.inf, 1.0)),
        Metric(
            "rmse",
            (REGRESSION,),
            False,
            False,
            lambda y, p, _pr, _c: float(skm.root_mean_squared_error(y, p)),
            (0.0, math.inf),
            relative_tolerance=True,
        ),
        Metric(
            "mae", (REGRESSION,), False, False, lambda y, p, _pr, _c: float(skm.mean_absolute_error(y, p)), (0.0, math.inf),
            relative_tolerance=True,
        ),
        Metric("accuracy", CLASSIFICATION, True, False, lambda y, p, _pr, _c: float(skm.accuracy_score(y, p))),
        Metric(
            "balanced_accuracy",
            CLASSIFICATION,
            True,
            False,
            lambda y, p, _pr, _c: float(skm.balanced_accuracy_score(y, p)),
        ),
        Metric(
            "f1_macro",
            CLASSIFICATION,
            True,
            False,
            lambda y, p, _pr, c: float(skm.f1_score(y, p, average="macro", labels=c, zero_division=0)),
        ),
        Metric("roc_auc", CLASSIFICATION, True, True, _roc_auc),
        Metric("log_loss", CLASSIFICATION, False, True, _log_loss, (0.0, math.inf), relative_tolerance=True),
    )
}

DEFAULT_METRIC: Mapping[str, str] = {REGRESSION: "r2", BINARY: "roc_auc", MULTICLASS: "balanced_accuracy"}
"""The primary metric per task when the config names none: scale-free, and robust to imbalance."""


def metrics_for(task: str) -> tuple[Metric, ...]:
    """Every metric that applies to a task, in registry order.

    Args:
        task: `regression`, `binary` or `multiclass`.

    Returns:
        The metrics.
    """
    return tuple(m for m in METRICS.values() if task in m.tasks)


def score_all(
    metrics: tuple[Metric, ...],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    classes: np.ndarray | None,
) -> dict[str, float]:
    """Score one set of predictions with several metrics.

    Args:
        metrics: The metrics.
        y_true: True targets.
        y_pred: Predicted targets (labels for classification).
        proba: Class probabilities, columns in the order of `classes`, or None.
        classes: Class labels, or None for regression.

    Returns:
        `{metric name: score}`.
    """
    return {m.name: m.score(np.asarray(y_true), np.asarray(y_pred), proba, classes) for m in metrics}
