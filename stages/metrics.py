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
from functools import partial
from typing import Any

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
        row_loss: `(y_true, y_pred, proba, classes) -> (losses, weights)`: each row's loss,
            whose weighted mean is the metric's loss in its own units (`1 - accuracy`, the
            mean squared error for rmse, ...), so two models' losses on the same rows can be
            compared row by row (`stages.challenge`). Weights are 1, or balance the classes
            for class-averaged metrics.
        squared: The row losses are squared errors of a metric that is their root (rmse):
            a tolerance in the metric's units is converted (see `loss_tolerance`).
        se_factor: How much the standard error of the weighted mean of row losses understates
            the metric's own: 1 for rows that count independently; 2 for ROC AUC, whose
            positive and negative halves each estimate the whole (DeLong et al., 1988).
        scorer: `task -> scikit-learn scorer` that scores as `score` does (greater is better,
            losses negated), for searches that take one (`--tune`); None: no search ranks by it.
    """

    name: str
    tasks: tuple[str, ...]
    greater_is_better: bool
    needs_proba: bool
    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], float]
    bounds: tuple[float, float] = (0.0, 1.0)
    relative_tolerance: bool = False
    row_loss: Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], tuple[np.ndarray, np.ndarray]] | None = None
    squared: bool = False
    se_factor: float = 1.0
    scorer: Callable[[str], Any] | None = None

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


    def loss_tolerance(self, tolerance: float, score: float) -> float:
        """A tolerance in the metric's units as a tolerance on the mean of its row losses.

        Args:
            tolerance: The largest acceptable loss in the metric's units (0 or more).
            score: The reference model's score (for a root metric, the loss is squared).

        Returns:
            The same tolerance in the row losses' units.
        """
        if not self.squared:
            return tolerance
        return (abs(score) + tolerance) ** 2 - score**2 if math.isfinite(score) else 0.0


def _ones(y: np.ndarray) -> np.ndarray:
    return np.ones(len(y), dtype=float)


def _class_weights(y: np.ndarray) -> np.ndarray:
    """Weights that give each class the same total, with a weighted mean of 1 (as balanced accuracy counts)."""
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return len(y) / (len(counts) * counts[inverse].astype(float))


def _errors(y: np.ndarray, pred: np.ndarray, _proba: np.ndarray | None, _classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(y) != np.asarray(pred)).astype(float), _ones(y)


def _balanced_errors(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    # For f1_macro too: F1 does not split into rows; the class-balanced error is its nearest per-row loss.
    return (np.asarray(y) != np.asarray(pred)).astype(float), _class_weights(np.asarray(y))


def _squared_errors(y: np.ndarray, pred: np.ndarray, _proba: np.ndarray | None, _classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(y, dtype=float) - np.asarray(pred, dtype=float)) ** 2, _ones(y)


def _r2_losses(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    # r2 = 1 - mean squared error / variance of y: a difference in r2 is a difference in squared error over the variance.
    errors, weights = _squared_errors(y, pred, proba, classes)
    variance = float(np.var(np.asarray(y, dtype=float)))
    return errors / (variance if variance > 0 else 1.0), weights


def _absolute_errors(y: np.ndarray, pred: np.ndarray, _proba: np.ndarray | None, _classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return np.abs(np.asarray(y, dtype=float) - np.asarray(pred, dtype=float)), _ones(y)


def _true_class_proba(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    position = {c: i for i, c in enumerate(classes.tolist())}
    index = np.array([position.get(v, -1) for v in np.asarray(y).tolist()])
    p = np.where(index >= 0, proba[np.arange(len(y)), np.maximum(index, 0)], 0.0)
    return p


def _log_losses(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if proba is None or classes is None:
        return np.full(len(y), np.nan), _ones(y)
    p = np.clip(_true_class_proba(y, proba, classes), np.finfo(float).eps, 1.0)  # as sklearn's log_loss clips
    return -np.log(p), _ones(y)


def _rank_losses(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row losses of one binary ROC AUC: their class-balanced mean is 1 - AUC.

    A positive row's loss is the share of negatives scored above it (ties count half); a
    negative row's, the share of positives scored below it. Each class's mean loss is
    1 - AUC, so their average with equal weight per class is too.
    """
    pos, neg = np.sort(score[positive]), np.sort(score[~positive])
    loss = np.zeros(len(score))
    if len(pos) == 0 or len(neg) == 0:
        return np.full(len(score), np.nan), _ones(score)
    s_pos, s_neg = score[positive], score[~positive]
    above = len(neg) - np.searchsorted(neg, s_pos, side="right")
    ties = np.searchsorted(neg, s_pos, side="right") - np.searchsorted(neg, s_pos, side="left")
    loss[positive] = (above + 0.5 * ties) / len(neg)
    below = np.searchsorted(pos, s_neg, side="left")
    ties = np.searchsorted(pos, s_neg, side="right") - np.searchsorted(pos, s_neg, side="left")
    loss[~positive] = (below + 0.5 * ties) / len(pos)
    return loss, _class_weights(positive)


def _auc_losses(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if proba is None or classes is None:
        return np.full(len(y), np.nan), _ones(y)
    y = np.asarray(y)
    if len(classes) == 2:
        return _rank_losses(y == classes[1], proba[:, 1])
    # One-vs-rest, macro: the mean over classes of each binary AUC's weighted row losses.
    total = np.zeros(len(y))
    for i, c in enumerate(classes):
        loss, weights = _rank_losses(y == c, proba[:, i])
        total += loss * weights / len(classes)
    return total, _ones(y)


def _roc_auc(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> float:
    if proba is None or classes is None:
        return float("nan")
    if len(classes) == 2:
        return float(skm.roc_auc_score(y == classes[1], proba[:, 1]))
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))


def _named_scorer(name: str, _task: str) -> Any:
    return skm.get_scorer(name)


def _auc_scorer(task: str) -> Any:
    return skm.get_scorer("roc_auc" if task == BINARY else "roc_auc_ovr")


def _f1_scorer(_task: str) -> Any:
    # As `score`: a class never predicted scores 0, without a warning; pos_label=None because
    # macro averaging uses no positive class (the default, 1, fails on text labels).
    return skm.make_scorer(skm.f1_score, average="macro", zero_division=0, pos_label=None)


def _log_loss(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray | None) -> float:
    if proba is None or classes is None:
        return float("nan")
    return float(skm.log_loss(y, proba, labels=classes))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("r2", (REGRESSION,), True, False, lambda y, p, _pr, _c: float(skm.r2_score(y, p)), (-math.inf, 1.0),
               row_loss=_r2_losses, scorer=partial(_named_scorer, "r2")),
        Metric(
            "rmse",
            (REGRESSION,),
            False,
            False,
            lambda y, p, _pr, _c: float(skm.root_mean_squared_error(y, p)),
            (0.0, math.inf),
            relative_tolerance=True,
            row_loss=_squared_errors,
            squared=True,
            scorer=partial(_named_scorer, "neg_root_mean_squared_error"),
        ),
        Metric(
            "mae", (REGRESSION,), False, False, lambda y, p, _pr, _c: float(skm.mean_absolute_error(y, p)), (0.0, math.inf),
            relative_tolerance=True, row_loss=_absolute_errors, scorer=partial(_named_scorer, "neg_mean_absolute_error"),
        ),
        Metric("accuracy", CLASSIFICATION, True, False, lambda y, p, _pr, _c: float(skm.accuracy_score(y, p)),
               row_loss=_errors, scorer=partial(_named_scorer, "accuracy")),
        Metric(
            "balanced_accuracy",
            CLASSIFICATION,
            True,
            False,
            lambda y, p, _pr, _c: float(skm.balanced_accuracy_score(y, p)),
            row_loss=_balanced_errors,
            scorer=partial(_named_scorer, "balanced_accuracy"),
        ),
        Metric(
            "f1_macro",
            CLASSIFICATION,
            True,
            False,
            lambda y, p, _pr, c: float(skm.f1_score(y, p, average="macro", labels=c, zero_division=0)),
            row_loss=_balanced_errors,
            scorer=_f1_scorer,
        ),
        Metric("roc_auc", CLASSIFICATION, True, True, _roc_auc, row_loss=_auc_losses, se_factor=2.0, scorer=_auc_scorer),
        Metric("log_loss", CLASSIFICATION, False, True, _log_loss, (0.0, math.inf), relative_tolerance=True, row_loss=_log_losses,
               scorer=partial(_named_scorer, "neg_log_loss")),
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
