"""CRISP-DM phase 5, evaluation: the chosen candidate judged again on the untouched holdout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from stages.metrics import metrics_for, score_all
from stages.modeling import CandidateResult, predict_with_proba
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


def evaluate_holdout(candidate: CandidateResult, pipeline: Pipeline, split: Split, task: str, metric: str) -> Evaluation:
    """Refit the candidate on the whole training part and score it on the holdout.

    Args:
        candidate: The candidate's cross-validation result.
        pipeline: Its unfitted pipeline (a clone is fitted).
        split: Training part and holdout.
        task: The task.
        metric: The primary metric.

    Returns:
        The evaluation.
    """
    classes = np.unique(split.y_train.to_numpy()) if task in CLASSIFICATION else None
    model = clone(pipeline).fit(split.X_train, split.y_train)
    pred, proba = predict_with_proba(model, split.X_test, classes)
    y_true = split.y_test.to_numpy()
    metrics = metrics_for(task)
    return Evaluation(
        model=candidate.name,
        metric=metric,
        holdout=score_all(metrics, y_true, pred, proba, classes),
        cv_mean={m.name: candidate.mean(m.name) for m in metrics},
        cv_std={m.name: candidate.std(m.name) for m in metrics},
        n_train=len(split.y_train),
        n_test=len(y_true),
        y_true=y_true,
        y_pred=np.asarray(pred),
        proba=proba,
        classes=classes,
    )
