"""CRISP-DM phase 4, modeling: the candidates, compared by cross-validation on the same folds.

`MODELS` maps a short name to one factory per task family; adding a model is one entry.
`compare_models` fits every (candidate, fold) pair in one pool of worker processes
(`pipeline.workers`), scores each fold with every metric of the task, and turns a
candidate that fails, hangs past its time limit or runs out of memory into a leaderboard
row with the reason instead of stopping the run.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import TransformedTargetRegressor
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import AdaBoostClassifier, AdaBoostRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from pipeline.errors import DataError, Interrupted
from pipeline.workers import LOCAL, Backend, Outcome, Task, run_tasks
from stages.metrics import METRICS, Metric, metrics_for, score_all
from stages.understanding import CLASSIFICATION, REGRESSION

Folds = tuple[tuple[np.ndarray, np.ndarray], ...]

OK = "ok"
FAILED = "failed"


@dataclass(frozen=True)
class ModelSettings:
    """What a model factory may depend on.

    Attributes:
        task: `regression`, `binary` or `multiclass`.
        seed: Random seed for every estimator that has one.
        mlp_hidden_layers: Units per hidden layer of the MLP.
        n_rows: Training rows, for choices that depend on data size.
    """

    task: str
    seed: int
    mlp_hidden_layers: tuple[int, ...] = (64, 32)
    n_rows: int = 0


MLP_EARLY_STOPPING_MIN_ROWS = 1000
"""Below this many training rows the MLP trains to convergence instead of stopping early.

Early stopping judges each epoch on 10% of the training rows. On small data that is a
handful of rows whose accuracy saturates at once: on penguins (22 validation rows) it
stopped one fold at 0.77 balanced accuracy, where training to convergence reached 0.98.
"""


@dataclass(frozen=True)
class ModelSpec:
    """One candidate family: how to build it for regression and for classification.

    Attributes:
        regression: Factory of the regression estimator.
        classification: Factory of the classification estimator.
        complexity: Rank from simplest (0, the baseline) up: how hard the fitted model is
            to read and how much it costs to keep and run. The `simplest_within_noise`
            selection rule picks the lowest among the candidates within noise of the best.
    """

    regression: Callable[[ModelSettings], BaseEstimator]
    classification: Callable[[ModelSettings], BaseEstimator]
    complexity: int = 99

    def build(self, settings: ModelSettings) -> BaseEstimator:
        """A new, unfitted estimator for the settings' task."""
        factory = self.regression if settings.task == REGRESSION else self.classification
        return factory(settings)


MODELS: dict[str, ModelSpec] = {
    "baseline": ModelSpec(
        regression=lambda s: DummyRegressor(strategy="mean"),
        classification=lambda s: DummyClassifier(strategy="prior"),
        complexity=0,
    ),
    "linear": ModelSpec(
        regression=lambda s: LinearRegression(),
        classification=lambda s: LogisticRegression(max_iter=1000, random_state=s.seed),
        complexity=1,  # one coefficient per feature column
    ),
    "svm": ModelSpec(
        # SVR's defaults (C=1, epsilon=0.1) assume a target of unit scale: on body mass in
        # grams it scored r2 0.01; fitted on the standardised target, 0.85.
        regression=lambda s: TransformedTargetRegressor(SVR(), transformer=StandardScaler()),
        # Platt-scaled probabilities from internal CV (scikit-learn's replacement for
        # SVC(probability=True)), for ROC AUC, log loss and probability columns.
        classification=lambda s: CalibratedClassifierCV(SVC(random_state=s.seed), ensemble=False),
        complexity=4,  # a kernel over stored support vectors: predict cost grows with training rows
    ),
    "random_forest": ModelSpec(
        regression=lambda s: RandomForestRegressor(n_estimators=100, random_state=s.seed, n_jobs=1),
        classification=lambda s: RandomForestClassifier(n_estimators=100, random_state=s.seed, n_jobs=1),
        complexity=3,  # 100 deep trees
    ),
    "adaboost": ModelSpec(
        regression=lambda s: AdaBoostRegressor(random_state=s.seed),
        classification=lambda s: AdaBoostClassifier(random_state=s.seed),
        complexity=2,  # 50 shallow trees (stumps for classification)
    ),
    "mlp": ModelSpec(
        # ReLU hidden units; identity output with squared error for regression, logistic or
        # softmax output with cross-entropy for classification (scikit-learn picks the
        # output from the target). Early stopping from MLP_EARLY_STOPPING_MIN_ROWS rows.
        regression=lambda s: MLPRegressor(**_mlp_params(s)),
        classification=lambda s: MLPClassifier(**_mlp_params(s)),
        complexity=5,  # thousands of weights, the least readable
    ),
}
"""Candidates by short name. `baseline` is the floor every model must beat."""


def _mlp_params(s: ModelSettings) -> dict[str, Any]:
    return {
        "hidden_layer_sizes": s.mlp_hidden_layers,
        "activation": "relu",
        "solver": "adam",
        "early_stopping": s.n_rows >= MLP_EARLY_STOPPING_MIN_ROWS,
        "max_iter": 500,
        "random_state": s.seed,
    }


@dataclass(frozen=True)
class FoldResult:
    """One candidate fitted on one training fold and scored on its test fold."""

    candidate: str
    fold: int
    scores: dict[str, float]
    fit_seconds: float
    predict_seconds: float
    error: str = ""
    warnings: tuple[str, ...] = ()
    worker: str = ""  # host:pid of the process that fitted it


@dataclass(frozen=True)
class CandidateResult:
    """A candidate's cross-validation result: one leaderboard row.

    Attributes:
        name: Short name (`svm`, ...).
        estimator: The final estimator's class name.
        params: The final estimator's parameters, as text.
        status: `ok`, or `failed` when any fold failed to fit or score.
        error: The first error, for a failed candidate.
        fold_scores: `{metric: per-fold scores}`, in fold order.
        fit_seconds: Mean fit time per fold.
        predict_seconds: Mean predict time per fold (whole test fold).
        warnings: Distinct warnings raised while fitting, e.g. convergence.
        workers: The process (`host:pid`) that fitted each fold, in fold order.
    """

    name: str
    estimator: str
    params: dict[str, str]
    status: str
    error: str = ""
    fold_scores: dict[str, tuple[float, ...]] = field(default_factory=dict)
    fit_seconds: float = math.nan
    predict_seconds: float = math.nan
    warnings: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()

    def mean(self, metric: str) -> float:
        """Mean score over folds (NaN when failed)."""
        scores = self.fold_scores.get(metric)
        return float(np.mean(scores)) if scores else math.nan

    def std(self, metric: str) -> float:
        """Standard deviation over folds (NaN when failed)."""
        scores = self.fold_scores.get(metric)
        return float(np.std(scores, ddof=1)) if scores and len(scores) > 1 else math.nan


@dataclass(frozen=True)
class Leaderboard:
    """Every candidate's result, best first by the primary metric; failed ones last.

    Attributes:
        task: The task.
        metric: The primary metric.
        metrics: Every metric scored.
        n_folds: Folds used.
        rows: The candidates, best first.
    """

    task: str
    metric: str
    metrics: tuple[str, ...]
    n_folds: int
    rows: tuple[CandidateResult, ...]

    @property
    def best(self) -> CandidateResult | None:
        """The top candidate that did not fail, or None when all failed."""
        ok = [r for r in self.rows if r.status == OK and not math.isnan(r.mean(self.metric))]
        return ok[0] if ok else None

    def to_frame(self) -> pd.DataFrame:
        """One row per candidate: rank, status, mean and std of every metric, timings, error."""
        records = []
        for rank, r in enumerate(self.rows, start=1):
            record: dict[str, Any] = {"rank": rank, "model": r.name, "status": r.status}
            for m in self.metrics:
                record[f"{m}_mean"] = r.mean(m)
                record[f"{m}_std"] = r.std(m)
            record["fit_seconds"] = r.fit_seconds
            record["predict_seconds"] = r.predict_seconds
            record["error"] = r.error
            records.append(record)
        return pd.DataFrame.from_records(records)


def build_candidates(names: Sequence[str], preprocessor: BaseEstimator, settings: ModelSettings) -> dict[str, Pipeline]:
    """Unfitted pipelines, preprocessing first, one per named candidate.

    Args:
        names: Short names from `MODELS`.
        preprocessor: The unfitted preprocessor; each pipeline gets its own clone.
        settings: Task and seed for the factories.

    Returns:
        `{name: Pipeline([("prepare", preprocessor), ("model", estimator)])}`.
    """
    return {
        name: Pipeline([("prepare", clone(preprocessor)), ("model", MODELS[name].build(settings))]) for name in names
    }


def make_folds(y: pd.Series, task: str, k: int, seed: int) -> Folds:
    """The cross-validation folds every candidate is scored on.

    Args:
        y: Target of the training part.
        task: The task; classification folds are stratified.
        k: Number of folds.
        seed: Random seed for the shuffle.

    Returns:
        `((train_indices, test_indices), ...)`, positions into `y`.

    Raises:
        DataError: Fewer rows than folds, or a class with fewer rows than folds.
    """
    if len(y) < k:
        raise DataError(
            f"only {len(y)} training rows (after the holdout) for {k} folds; add rows or use fewer folds "
            f"(--folds {max(2, len(y))})"
        )
    if task in CLASSIFICATION:
        counts = y.value_counts()
        rarest, n = counts.idxmin(), int(counts.min())
        if n < 2:
            raise DataError(
                f"class '{rarest}' of target '{y.name}' has only {n} training row (after the holdout), too few to "
                "cross-validate with any number of folds; add rows of that class, merge it into another, or drop it"
            )
        if n < k:
            raise DataError(
                f"class '{rarest}' of target '{y.name}' has only {n} training rows (after the holdout), fewer than the "
                f"{k} folds; use fewer folds (--folds {n}), add rows, or merge rare classes"
            )
        splitter: KFold | StratifiedKFold = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return tuple((train, test) for train, test in splitter.split(np.zeros(len(y)), y))


def compare_models(
    candidates: Mapping[str, Pipeline],
    X: pd.DataFrame,
    y: pd.Series,
    folds: Folds,
    task: str,
    metric: str,
    n_jobs: int = -1,
    timeout: float | None = None,
    memory_mb: int | None = None,
    on_candidate: Callable[[CandidateResult], None] | None = None,
    on_fit: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
    backend: Backend = LOCAL,
) -> Leaderboard:
    """Cross-validate every candidate on the same folds and rank them.

    All (candidate, fold) fits go into one pool of worker processes (`pipeline.workers`),
    so a slow candidate does not leave cores idle while the others wait. A candidate that
    raises, runs past `timeout`, runs out of memory or kills its worker becomes a `failed`
    row with the reason; the others go on. With `n_jobs=1` and no limits the fits run
    in this process instead.

    Args:
        candidates: Unfitted pipelines by name; each fold fits a clone.
        X: Features of the training part.
        y: Target of the training part.
        folds: From `make_folds`.
        task: The task.
        metric: The primary metric, which ranks the candidates.
        n_jobs: Parallel fits (-1: every core).
        timeout: Seconds a candidate's fits may take in total (all folds); None for no limit.
        memory_mb: Address-space limit of each worker process in MiB; None for no limit.
        on_candidate: Called with each candidate's result as soon as all its folds are done.
        on_fit: Called with (fits finished, fits in all) after each (candidate, fold) fit.
        deadline: `time.monotonic()` value by which every fit must be done; fits not done
            by then fail with `NOT_IN_BUDGET`. None for no deadline.
        backend: Where the fits run (`pipeline.workers.Backend`).

    Returns:
        The leaderboard.

    Raises:
        Interrupted: Ctrl-C or SIGTERM stopped the comparison; its `partial` is the
            leaderboard so far, with unfinished candidates failed as interrupted.
    """
    metrics = metrics_for(task)
    classes = np.unique(y.to_numpy()) if task in CLASSIFICATION else None
    names = list(candidates)
    tasks = [Task(name, (name, i)) for name in names for i in range(len(folds))]
    shared = (dict(candidates), X, y, folds, metrics, classes)

    def report(name: str, outcomes: list[Outcome]) -> None:
        if on_candidate is not None:
            on_candidate(_summarise(name, candidates[name], _fold_results(name, outcomes)))

    try:
        outcomes = run_tasks(
            _run_fold, shared, tasks, n_jobs, timeout, memory_mb * 2**20 if memory_mb else None, report, on_fit,
            deadline=deadline, backend=backend,
        )
    except Interrupted as stop:
        unfinished = Outcome(error="interrupted before it finished")
        outcomes = [o if o is not None else unfinished for o in stop.partial]
        board = _leaderboard(names, candidates, outcomes, len(folds), task, metric, metrics)
        raise Interrupted(stop.signum, board) from None
    return _leaderboard(names, candidates, outcomes, len(folds), task, metric, metrics)


def _leaderboard(
    names: list[str],
    candidates: Mapping[str, Pipeline],
    outcomes: list[Outcome],
    n_folds: int,
    task: str,
    metric: str,
    metrics: tuple[Metric, ...],
) -> Leaderboard:
    rows = [
        _summarise(name, candidates[name], _fold_results(name, outcomes[k * n_folds : (k + 1) * n_folds]))
        for k, name in enumerate(names)
    ]
    return Leaderboard(
        task=task, metric=metric, metrics=tuple(m.name for m in metrics), n_folds=n_folds, rows=rank(rows, METRICS[metric])
    )


def _fold_results(name: str, outcomes: Sequence[Outcome]) -> list[FoldResult]:
    """A candidate's fold results, in fold order; a fold with no result carries its outcome's error."""
    return [
        o.value if not o.error else FoldResult(name, i, {}, math.nan, math.nan, error=o.error)
        for i, o in enumerate(outcomes)
    ]


def rank(rows: Sequence[CandidateResult], metric: Metric) -> tuple[CandidateResult, ...]:
    """Order candidates best first by a metric's mean; failed ones and NaN scores last.

    Args:
        rows: The candidates.
        metric: The ranking metric.

    Returns:
        The ordered rows. Ties keep their given order.
    """

    def key(r: CandidateResult) -> tuple[int, float]:
        mean = r.mean(metric.name)
        if r.status != OK or math.isnan(mean):
            return (1, 0.0)
        return (0, -mean if metric.greater_is_better else mean)

    return tuple(sorted(rows, key=key))


def predict_with_proba(model: Any, X: pd.DataFrame, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions and, for a classifier, probabilities aligned to `classes`.

    Args:
        model: A fitted estimator or pipeline.
        X: Features.
        classes: Every class label, or None for regression.

    Returns:
        `(predictions, probabilities or None)`; a class the model never saw gets probability 0.
    """
    pred = model.predict(X)
    if classes is None or not hasattr(model, "predict_proba"):
        return pred, None
    raw = model.predict_proba(X)
    proba = np.zeros((len(X), len(classes)))
    position = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(model.classes_):
        proba[:, position[c]] = raw[:, j]
    return pred, proba


def _run_fold(shared: tuple[Any, ...], args: tuple[str, int]) -> FoldResult:
    """One task of the pool: fit candidate `name` on fold `i` of the shared data."""
    candidates, X, y, folds, metrics, classes = shared
    name, i = args
    return _fit_and_score(name, candidates[name], X, y, folds[i], i, metrics, classes)


def _fit_and_score(
    name: str,
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    fold: tuple[np.ndarray, np.ndarray],
    index: int,
    metrics: tuple[Metric, ...],
    classes: np.ndarray | None,
) -> FoldResult:
    train, test = fold
    model = clone(pipeline)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            model.fit(X.iloc[train], y.iloc[train])
            fitted = time.perf_counter()
            pred, proba = predict_with_proba(model, X.iloc[test], classes)
            predicted = time.perf_counter()
            scores = score_all(metrics, y.iloc[test].to_numpy(), pred, proba, classes)
        except Exception as exc:  # a candidate's failure is a result, not a crash
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, MemoryError):
                error = f"out of memory ({error})"
            return FoldResult(name, index, {}, time.perf_counter() - start, math.nan, error)
    messages = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return FoldResult(name, index, scores, fitted - start, predicted - fitted, warnings=messages, worker=_worker_id())


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _summarise(name: str, pipeline: Pipeline, folds: list[FoldResult]) -> CandidateResult:
    estimator = pipeline.steps[-1][1]
    params = {k: str(v) for k, v in estimator.get_params(deep=False).items()}
    folds = sorted(folds, key=lambda f: f.fold)
    seen_warnings = tuple(dict.fromkeys(w for f in folds for w in f.warnings))
    failed = [f for f in folds if f.error]
    common = {
        "name": name,
        "estimator": type(estimator).__name__,
        "params": params,
        "warnings": seen_warnings,
        "workers": tuple(f.worker for f in folds),
    }
    if failed:
        return CandidateResult(status=FAILED, error=f"fold {failed[0].fold + 1}: {failed[0].error}", **common)
    return CandidateResult(
        status=OK,
        fold_scores={m: tuple(f.scores[m] for f in folds) for m in folds[0].scores},
        fit_seconds=float(np.mean([f.fit_seconds for f in folds])),
        predict_seconds=float(np.mean([f.predict_seconds for f in folds])),
        **common,
    )
