"""CRISP-DM phase 4, modeling: the candidates, compared by cross-validation on the same folds.

`MODELS` maps a short name to one factory per task family; adding a model is one entry.
`compare_models` hands every (candidate, fold) fit to one executor (`stages.fitting`: the
wiring's pool of worker processes or Dask cluster), scores each fold with every metric of the task, and turns a
candidate that fails, hangs past its time limit or runs out of memory into a leaderboard
row with the reason instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import joblib
import numpy as np
import pandas as pd
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import TransformedTargetRegressor
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR

from stages.errors import DataError, Interrupted
from stages.early_stopping import EarlyStoppingClassifier
from stages.fitting import IN_PROCESS, NOT_IN_BUDGET, Executor, Outcome, Task
from stages.metrics import METRICS, Metric, metrics_for, score_all
from stages.subsample import RowSubsample
from stages.tuning import default_name, is_tuned
from stages.understanding import CLASSIFICATION, REGRESSION

Folds = tuple[tuple[np.ndarray, np.ndarray], ...]

OK = "ok"
FAILED = "failed"
UNFINISHED = "unfinished"
"""The status of a candidate whose folds were not all done within the run's time budget."""
RACED_OUT = "raced_out"
"""Stopped before its last fold because its folds so far showed it could not be chosen (`stages.racing`)."""
RACED_OUT_PREFIX = "raced out"
"""How the reason of a raced-out candidate, and the error of each fold it skipped, begins."""


class Race(Protocol):
    """What `compare_models` asks of a race (`stages.racing.Race`), fed each fold's score as it comes in."""

    out: Mapping[str, str]
    """`{name: reason}` of the candidates raced out."""
    kept: Mapping[str, int]
    """`{name: m}`: a raced-out candidate's row holds its folds `0..m-1`."""

    def record(self, name: str, fold: int, score: float) -> Mapping[str, str]:
        """Take one fold's primary score; return `{name: reason}` of the candidates raced out by it."""
        ...

    def pick(self, waiting: Sequence[tuple[str, int]]) -> int:
        """Which waiting (candidate, fold) a free worker should start (a position in `waiting`)."""
        ...

    def orphans(self, finished: Collection[str]) -> list[str]:
        """The raced-out candidates whose verdict rested on a rival that did not finish."""
        ...

    def reinstate(self, names: Collection[str]) -> None:
        """Take those candidates back into the field."""
        ...


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
"""Below this many training rows a classification MLP trains to convergence instead of stopping early.

Early stopping judges each epoch on 10% of the training rows. On small data that is a
handful of rows whose accuracy saturates at once: on penguins (22 validation rows) it
stopped one fold at 0.77 balanced accuracy, where training to convergence reached 0.98.
From this many rows it stops on the validation log loss instead (`stages.early_stopping`:
validation accuracy also stays flat when one class dominates). Below, stopping on the log
loss scored the same as convergence (breast cancer, penguins) at two to five times the fit time.
"""
MLP_REGRESSION_EARLY_STOPPING_MIN_ROWS = 200
"""From this many training rows (20 validation rows) a regression MLP stops early, on the validation r2.

A network of thousands of weights trained to convergence on a few hundred rows fits their
noise: on scikit-learn's diabetes data (353 rows) it scored r2 0.06 where stopping early
scored 0.43 and linear regression 0.48; on penguins' body mass the two were level (0.85).
"""
MLP_REGRESSION_PATIENCE = 20
"""Epochs without an improvement of the validation r2 before a regression MLP stops (`n_iter_no_change`)."""
GRADIENT_BOOSTING_EARLY_STOPPING_MIN_ROWS = 10_000
"""Above this many training rows gradient boosting stops early on the loss of a 10% validation split.

scikit-learn's own threshold for `early_stopping='auto'`, applied to the run's training rows
rather than to each fit's, so that the cross-validation folds and the deployed refit make the
same choice (and the leaderboard can say which).
"""

# Size-dependent choices (rows: the training part after the holdout). Each one shows on the
# leaderboard as the candidate's `strategy` and in its parameters. Measured on 2 cores with
# 800,000 rows x 57 prepared columns, one fit: AdaBoost's 50 stumps 176 s, 10 MLP epochs 65 s,
# a forest of 100 trees on 20,000 rows each 12 s, Nystroem(300) + calibrated LinearSVC on
# 100,000 rows 37 s, logistic regression 1.5 s. An exact RBF SVM costs O(n^2) memory and more
# than O(n^2) time, so it stops being usable between 20,000 and 50,000 rows.
EXACT_SVM_MAX_ROWS = 20_000
"""Up to this many rows the SVM is an exact RBF kernel machine; above, a kernel approximation."""
NYSTROEM_COMPONENTS = 300
"""Kernel features of the approximate SVM (Nystroem approximation of the RBF kernel)."""
APPROX_SVM_MAX_ROWS = 30_000
"""The approximate SVM learns from at most this many rows."""
FOREST_ROWS_PER_TREE = 20_000
"""Above this many rows each random forest tree is grown on a bootstrap sample of this size (`max_samples`)."""
BOOSTING_MAX_ROWS = 100_000
"""AdaBoost learns from at most this many rows (its stumps are fitted one after another)."""
MLP_MAX_ROWS = 100_000
"""The MLP learns from at most this many rows (with early stopping, so it stops when it stops improving)."""
GRADIENT_BOOSTING_MAX_ROWS = 200_000
"""Gradient boosting learns from at most this many rows (see `_gradient_boosting` for the measurement)."""


def _capped(estimator: BaseEstimator, s: ModelSettings, max_rows: int) -> BaseEstimator:
    """The estimator as is up to `max_rows` rows, else fitted on a sample of that many rows."""
    return estimator if s.n_rows <= max_rows else RowSubsample(estimator, max_rows=max_rows, random_state=s.seed)


def _nystroem(linear_svm: BaseEstimator, s: ModelSettings) -> Pipeline:
    """The RBF kernel approximated by `NYSTROEM_COMPONENTS` Nystroem features, then a linear SVM."""
    return Pipeline([("kernel", Nystroem(n_components=NYSTROEM_COMPONENTS, random_state=s.seed)), ("svm", linear_svm)])


def _svm_regression(s: ModelSettings) -> BaseEstimator:
    # SVR's defaults (C=1, epsilon=0.1) assume a target of unit scale: on body mass in
    # grams it scored r2 0.01; fitted on the standardised target, 0.85.
    if s.n_rows <= EXACT_SVM_MAX_ROWS:
        return TransformedTargetRegressor(SVR(), transformer=StandardScaler())
    approx = _nystroem(LinearSVR(dual="auto", random_state=s.seed, max_iter=5000), s)
    return _capped(TransformedTargetRegressor(approx, transformer=StandardScaler()), s, APPROX_SVM_MAX_ROWS)


def _svm_classification(s: ModelSettings) -> BaseEstimator:
    # Platt-scaled probabilities from internal CV (scikit-learn's replacement for
    # SVC(probability=True)), for ROC AUC, log loss and probability columns.
    if s.n_rows <= EXACT_SVM_MAX_ROWS:
        return CalibratedClassifierCV(SVC(random_state=s.seed), ensemble=False)
    approx = _nystroem(LinearSVC(dual="auto", random_state=s.seed, max_iter=5000), s)
    return _capped(CalibratedClassifierCV(approx, ensemble=False, cv=3), s, APPROX_SVM_MAX_ROWS)


def _forest(s: ModelSettings, cls: type) -> BaseEstimator:
    per_tree = FOREST_ROWS_PER_TREE if s.n_rows > FOREST_ROWS_PER_TREE else None
    return cls(n_estimators=100, max_samples=per_tree, random_state=s.seed, n_jobs=1)


def _gradient_boosting(s: ModelSettings, cls: type) -> BaseEstimator:
    # Each boosting iteration builds histograms in one pass over the rows. One thread, 57
    # columns, synthetic binary data: a fit on 800,000 rows took 73 to 119 s for a held-out
    # ROC AUC of 0.9422; on 200,000 rows 13 s for 0.9421 (hence GRADIENT_BOOSTING_MAX_ROWS).
    early = s.n_rows > GRADIENT_BOOSTING_EARLY_STOPPING_MIN_ROWS
    return _capped(cls(early_stopping=early, random_state=s.seed), s, GRADIENT_BOOSTING_MAX_ROWS)


def _mlp_regression(s: ModelSettings) -> BaseEstimator:
    # Fitted on the standardised target, as the SVR: adam's step size assumes outputs of unit
    # scale, and on a raw count target a network learns slowly, runs into its iteration cap
    # and moves with the seed. On the standardised target it stops early, and ten epochs of
    # patience (scikit-learn's default) stopped it too soon: bikeshare r2 0.891; 0.905 with
    # MLP_REGRESSION_PATIENCE epochs, in 6 s a fit (the raw-target network: 0.902, in 9 s).
    early = s.n_rows >= MLP_REGRESSION_EARLY_STOPPING_MIN_ROWS
    network = MLPRegressor(**_mlp_params(s), early_stopping=early, n_iter_no_change=MLP_REGRESSION_PATIENCE)
    return _capped(TransformedTargetRegressor(network, transformer=StandardScaler()), s, MLP_MAX_ROWS)


def _mlp_classification(s: ModelSettings) -> BaseEstimator:
    network = MLPClassifier(**_mlp_params(s))
    if s.n_rows < MLP_EARLY_STOPPING_MIN_ROWS:
        return network
    return _capped(EarlyStoppingClassifier(network, max_iter=network.max_iter, random_state=s.seed), s, MLP_MAX_ROWS)


def describe_strategy(estimator: BaseEstimator) -> str:
    """What an estimator does about data size, in words, read off the estimator itself.

    Args:
        estimator: An unfitted candidate estimator (the model step), possibly wrapped.

    Returns:
        E.g. "RBF kernel approximated by Nystroem(300) + linear SVM; learns from 50,000
        sampled rows"; "" when nothing depends on size.
    """
    parts: list[str] = []
    components = [estimator, *estimator.get_params(deep=True).values()]
    stopped = any(isinstance(part, EarlyStoppingClassifier) for part in components)
    for part in components:
        if isinstance(part, (SVC, SVR)):
            parts.append("exact RBF kernel")
        elif isinstance(part, Nystroem):
            parts.append(f"RBF kernel approximated by Nystroem({part.n_components}) + linear SVM")
        elif isinstance(part, (RandomForestClassifier, RandomForestRegressor)) and part.max_samples:
            parts.append(f"each tree on a bootstrap sample of {part.max_samples:,} rows")
        elif isinstance(part, EarlyStoppingClassifier):
            parts.append("early stopping on validation log loss")
        elif isinstance(part, (MLPClassifier, MLPRegressor)) and not stopped:
            parts.append("early stopping on validation r2" if part.early_stopping else "trained to convergence")
        elif isinstance(part, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
            rounds = f"{part.max_iter} boosting iterations"
            parts.append(f"early stopping on validation loss, at most {rounds}" if part.early_stopping else rounds)
        elif isinstance(part, RowSubsample) and part.max_rows:
            parts.append(f"learns from {part.max_rows:,} sampled rows")
    return "; ".join(dict.fromkeys(parts))


@dataclass(frozen=True)
class ModelSpec:
    """One candidate family, everything about it: adding a model is one entry of `MODELS`.

    Attributes:
        regression: Factory of the regression estimator. A factory makes its own
            size-dependent choices from `ModelSettings.n_rows` (subsampling, kernel
            approximation, early stopping); `describe_strategy` reads them off the estimator.
        classification: Factory of the classification estimator.
        complexity: Rank from simplest (0, the baseline) up: how hard the fitted model is
            to read and how much it costs to keep and run. The default selection rule
            picks the lowest among the candidates practically as good as the best.
        space: Its search space for `--tune` (`stages.tuning`), on base parameter names
            (`C`, `max_depth`): scipy.stats distributions or lists. Empty: no tuned variant.
        trusted_types: Types its fitted estimator holds beyond skops' defaults, reviewed as
            safe to load (loading them runs no user code): without them the model fails to
            save in skops format, at the end of a run.
    """

    regression: Callable[[ModelSettings], BaseEstimator]
    classification: Callable[[ModelSettings], BaseEstimator]
    complexity: int = 99
    space: Mapping[str, Any] = field(default_factory=dict)
    trusted_types: tuple[str, ...] = ()

    def build(self, settings: ModelSettings) -> BaseEstimator:
        """A new, unfitted estimator for the settings' task."""
        factory = self.regression if settings.task == REGRESSION else self.classification
        return factory(settings)


COMMON_TRUSTED_TYPES = ("numpy.dtype",)
"""Types beyond skops' defaults that any fitted pipeline may hold (a column's dtype)."""
_TREE = "sklearn.tree._tree.Tree"
"""The nodes of a fitted decision tree (forests and AdaBoost are made of them)."""


MODELS: dict[str, ModelSpec] = {
    "baseline": ModelSpec(
        regression=lambda s: DummyRegressor(strategy="mean"),
        classification=lambda s: DummyClassifier(strategy="prior"),
        complexity=0,  # the floor is never tuned
    ),
    "linear": ModelSpec(
        regression=lambda s: LinearRegression(),
        classification=lambda s: LogisticRegression(max_iter=1000, random_state=s.seed),
        complexity=1,  # one coefficient per feature column
        # LogisticRegression's inverse regularisation; LinearRegression has no hyperparameter
        # worth searching, so regression gets no `linear:tuned`.
        space={"C": loguniform(1e-3, 1e3)},
    ),
    "svm": ModelSpec(
        regression=_svm_regression,
        classification=_svm_classification,
        complexity=5,  # a kernel over stored support vectors: predict cost grows with training rows
        # The RBF kernel's C and gamma (the features are standardised: the default gamma,
        # 'scale', is about 1 / number of features); epsilon only for SVR, on the
        # standardised target. A kernel approximation has its gamma on the approximation.
        space={"C": loguniform(1e-2, 1e3), "gamma": loguniform(1e-3, 1e1), "epsilon": loguniform(1e-3, 1.0)},
        trusted_types=("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"),
    ),
    "random_forest": ModelSpec(
        regression=lambda s: _forest(s, RandomForestRegressor),
        classification=lambda s: _forest(s, RandomForestClassifier),
        complexity=4,  # 100 deep trees: nodes grow with the training rows
        space={"max_depth": [None, 4, 8, 16], "min_samples_leaf": [1, 2, 5, 10], "max_features": ["sqrt", 0.5, 1.0]},
        trusted_types=(_TREE,),
    ),
    "adaboost": ModelSpec(
        regression=lambda s: _capped(AdaBoostRegressor(random_state=s.seed), s, BOOSTING_MAX_ROWS),
        classification=lambda s: _capped(AdaBoostClassifier(random_state=s.seed), s, BOOSTING_MAX_ROWS),
        complexity=2,  # 50 shallow trees (stumps for classification)
        space={"n_estimators": [25, 50, 100, 200], "learning_rate": loguniform(1e-2, 2.0)},
        trusted_types=(_TREE,),
    ),
    "mlp": ModelSpec(
        # ReLU hidden units; identity output with squared error for regression, logistic or
        # softmax output with cross-entropy for classification (scikit-learn picks the
        # output from the target). Early stopping from MLP_REGRESSION_EARLY_STOPPING_MIN_ROWS
        # rows for regression, MLP_EARLY_STOPPING_MIN_ROWS for classification.
        regression=_mlp_regression,
        classification=_mlp_classification,
        complexity=6,  # thousands of weights, the least readable
        space={"alpha": loguniform(1e-6, 1e-1), "learning_rate_init": loguniform(1e-4, 1e-2)},
        trusted_types=(
            "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
            "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        ),
    ),
    "gradient_boosting": ModelSpec(
        # Histogram-based gradient boosting (LightGBM's algorithm): squared error for
        # regression, log loss for classification, scikit-learn's defaults otherwise.
        regression=lambda s: _gradient_boosting(s, HistGradientBoostingRegressor),
        classification=lambda s: _gradient_boosting(s, HistGradientBoostingClassifier),
        # Up to 100 trees of at most 31 leaves: more than AdaBoost's 50 shallow trees, far
        # fewer nodes than a forest's 100 fully grown trees (whose size grows with the rows).
        complexity=3,
        # The step size, the size of each tree and two regularisers, around scikit-learn's
        # defaults (0.1, 31 leaves, 20 rows a leaf, no L2 penalty); at most 100 iterations.
        space={
            "learning_rate": loguniform(0.03, 0.3),
            "max_leaf_nodes": [7, 15, 31, 63],
            "min_samples_leaf": [5, 10, 20, 50],
            "l2_regularization": [0.0, 0.1, 1.0, 10.0],
        },
        # Each tree of a fitted HistGradientBoosting model: arrays of nodes and category bitsets.
        trusted_types=("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    ),
}
"""Candidates by short name. `baseline` is the floor every model must beat."""


def search_spaces() -> dict[str, Mapping[str, Any]]:
    """Every family's search space for `--tune` (`stages.tuning.tuned_candidates`), by name."""
    return {name: spec.space for name, spec in MODELS.items()}


def trusted_types() -> list[str]:
    """The types beyond skops' defaults that a fitted candidate may hold, for saving and loading the model."""
    return sorted({*COMMON_TRUSTED_TYPES, *(t for spec in MODELS.values() for t in spec.trusted_types)})


def _mlp_params(s: ModelSettings) -> dict[str, Any]:
    return {
        "hidden_layer_sizes": s.mlp_hidden_layers,
        "activation": "relu",
        "solver": "adam",
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
    best_params: dict[str, str] = field(default_factory=dict)  # what a tuned candidate's search chose on this fold


@dataclass(frozen=True)
class CandidateResult:
    """A candidate's cross-validation result: one leaderboard row.

    Attributes:
        name: Short name (`svm`, ...).
        estimator: The final estimator's class name.
        params: The final estimator's parameters, as text.
        status: `ok`; `failed` when any fold failed to fit or score; `unfinished` when
            the run's time budget ran out before all its folds were done; `raced_out`
            when racing stopped it before its last fold (`stages.racing`).
        error: The first error, for a failed candidate; why it stopped, for a raced-out one.
        fold_scores: `{metric: per-fold scores}`, in fold order; a raced-out candidate's
            cover the folds it finished.
        fit_seconds: Mean fit time per fold.
        predict_seconds: Mean predict time per fold (whole test fold).
        warnings: Distinct warnings raised while fitting, e.g. convergence.
        workers: The process (`host:pid`) that fitted each fold, in fold order.
        strategy: What the candidate does about data size (`describe_strategy`).
        fold_params: For a tuned candidate, the setting its search chose on each fold.
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
    strategy: str = ""
    fold_params: tuple[dict[str, str], ...] = ()

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
            record["strategy"] = r.strategy
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


def fit_clone(pipeline: BaseEstimator, X: pd.DataFrame, y: pd.Series) -> BaseEstimator:
    """A fitted clone of an unfitted pipeline (a picklable unit of work for a worker process)."""
    return clone(pipeline).fit(X, y)


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
    executor: Executor = IN_PROCESS,
    timeout: float | None = None,
    memory_mb: int | None = None,
    on_candidate: Callable[[CandidateResult], None] | None = None,
    on_fit: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
    race: Race | None = None,
) -> Leaderboard:
    """Cross-validate every candidate on the same folds and rank them.

    All (candidate, fold) fits go to one executor (`stages.fitting`; the wiring hands it a
    pool of worker processes or a Dask cluster), so a slow candidate does not leave cores
    idle while the others wait. A candidate that raises, runs past `timeout`, runs out of
    memory or kills its worker becomes a `failed` row with the reason; the others go on.

    Args:
        candidates: Unfitted pipelines by name; each fold fits a clone.
        X: Features of the training part.
        y: Target of the training part.
        folds: From `make_folds`.
        task: The task.
        metric: The primary metric, which ranks the candidates.
        executor: Runs the fits; the default runs them one after another in this process,
            which enforces no limit (so `timeout`, `memory_mb` and `deadline` need another).
        timeout: Seconds a candidate's fits may take in total (all folds); None for no limit.
        memory_mb: Address-space limit of each worker process in MiB; None for no limit.
        on_candidate: Called with each candidate's result as soon as all its folds are done.
        on_fit: Called with (fits finished, fits in all) after each (candidate, fold) fit.
        deadline: `time.monotonic()` value by which every fit must be done; fits not done
            by then fail with `NOT_IN_BUDGET`. None for no deadline.
        race: Fed each fold's primary score as it comes in; a candidate it races out
            starts no more folds and is a `raced_out` row with the folds it was judged on
            (`stages.racing`). It also chooses which fit a free worker starts, so that few
            fits go to candidates about to be raced out. None cross-validates every
            candidate on every fold, in schedule order.

    Returns:
        The leaderboard.

    Raises:
        Interrupted: Ctrl-C or SIGTERM stopped the comparison; its `partial` is the
            leaderboard so far, with unfinished candidates failed as interrupted.
    """
    metrics = metrics_for(task)
    classes = np.unique(y.to_numpy()) if task in CLASSIFICATION else None
    names = list(candidates)
    # The preprocessor keys carry a token of this comparison: a worker (or this process) that
    # served an earlier one must not reuse prepared rows of other data.
    token = uuid.uuid4().hex
    keys = {name: f"{token}:{key}" for name, key in _preprocessor_keys(candidates).items()}
    shared_prep = len(set(keys.values())) < len(keys)
    tasks = _schedule(candidates, len(folds), deadline is not None, shared_prep=shared_prep)
    shared = (dict(candidates), keys, X, y, folds, metrics, classes)
    if deadline is not None or not shared_prep:
        # Candidate by candidate, a round closes only when the last candidate has its first
        # folds, after the others finished all theirs: racing would save nothing and discard work.
        race = None

    def raced(name: str, fold: int, outcome: Outcome | None) -> Outcome | None:
        """A raced-out candidate's row holds the folds its race judged it on, whatever else ran by then."""
        if race is None or name not in race.out or fold < race.kept[name]:
            return outcome
        return Outcome(error=race.out[name])

    def pick(waiting: Sequence[int]) -> int:
        return race.pick([tasks[i].args for i in waiting])  # type: ignore[union-attr]

    def settled(outcomes: Sequence[Outcome | None]) -> list[Outcome | None]:
        return [raced(*task.args, o) for task, o in zip(tasks, outcomes, strict=True)]

    def report(name: str, outcomes: list[Outcome]) -> None:
        if on_candidate is not None:  # a group's tasks are in fold order
            mine = [raced(name, i, o) for i, o in enumerate(outcomes)]
            on_candidate(_summarise(name, candidates[name], _fold_results(name, mine)))  # type: ignore[arg-type]

    def judge(index: int, outcome: Outcome) -> dict[str, str]:
        name, fold = tasks[index].args
        value = _scored(outcome)
        return race.record(name, fold, value.scores.get(metric, math.nan) if value else math.nan)  # type: ignore[union-attr]

    try:
        limits = {"group_seconds": timeout, "memory_bytes": memory_mb * 2**20 if memory_mb else None, "deadline": deadline}
        ordered = executor.run(
            _run_fold, shared, tasks, **limits, on_group_done=report, on_task_done=on_fit,
            judge=judge if race is not None else None, pick=pick if race is not None else None,
        )
        if race is not None:  # a verdict that rested on a rival which then failed: finish those folds after all
            ordered = _revive(race, tasks, ordered, lambda again: executor.run(_run_fold, shared, again, **limits))
    except Interrupted as stop:
        unfinished = Outcome(error="interrupted before it finished")
        so_far = stop.partial if isinstance(stop.partial, list) else [None] * len(tasks)  # None: stopped before any
        partial = [o if o is not None else unfinished for o in settled(so_far)]
        board = _leaderboard(names, candidates, _by_candidate(tasks, partial, names, len(folds)), len(folds), task, metric, metrics)
        raise Interrupted(stop.signum, board) from None
    ordered = settled(ordered)  # type: ignore[assignment]
    return _leaderboard(names, candidates, _by_candidate(tasks, ordered, names, len(folds)), len(folds), task, metric, metrics)


RETRIED = "the worker fitting it died and Dask ran the fit again on another worker"
"""The start of the warning a candidate carries for each fold that was run again (`Outcome.retries`)."""


def _scored(outcome: Outcome) -> FoldResult | None:
    """A task's fold result when the fit succeeded; None when the pool or the fit itself failed."""
    value = outcome.value
    return value if isinstance(value, FoldResult) and not value.error and not outcome.error else None


def _revive(
    race: Race, tasks: Sequence[Task], outcomes: list[Outcome], run: Callable[[list[Task]], list[Outcome]]
) -> list[Outcome]:
    """Run the skipped folds of every raced-out candidate whose verdict no longer stands (`Race.orphans`).

    Args:
        race: The race, after the comparison.
        tasks: The comparison's tasks.
        outcomes: Their outcomes, in task order.
        run: Runs a list of tasks and returns their outcomes in order.

    Returns:
        The outcomes with the revived candidates' folds filled in; those candidates are no
        longer raced out.
    """
    failed = {t.group for t, o in zip(tasks, outcomes, strict=True) if _scored(o) is None and not o.error.startswith(RACED_OUT_PREFIX)}
    raced = {t.group for t, o in zip(tasks, outcomes, strict=True) if o.error.startswith(RACED_OUT_PREFIX)}
    orphans = race.orphans({t.group for t in tasks} - failed - raced - set(race.out))
    if not orphans:
        return outcomes
    race.reinstate(orphans)
    again = [
        i for i, (t, o) in enumerate(zip(tasks, outcomes, strict=True))
        if t.group in orphans and o.error.startswith(RACED_OUT_PREFIX)  # skipped; a fold that failed stays failed
    ]
    merged = list(outcomes)
    for i, outcome in zip(again, run([tasks[i] for i in again]), strict=True):
        merged[i] = outcome
    return merged


VARIANT_COMPLEXITY = 0.5
"""Added to a family's complexity for a variant of it (`svm:tuned`): just above its default and
below the next family, so that the default is chosen when the two are practically as good."""


def complexity(name: str) -> float:
    """A candidate's complexity rank, variants (`svm:tuned`) included.

    Args:
        name: A candidate name, `svm` or `svm:tuned`.

    Returns:
        The family's `ModelSpec.complexity`, plus `VARIANT_COMPLEXITY` for a variant;
        infinity for a name not in `MODELS`.
    """
    spec = MODELS.get(default_name(name))
    if spec is None:
        return math.inf
    return spec.complexity + (VARIANT_COMPLEXITY if is_tuned(name) else 0.0)


def _schedule(candidates: Mapping[str, Pipeline], n_folds: int, budgeted: bool, shared_prep: bool = True) -> list[Task]:
    """The order the (candidate, fold) fits start in.

    Without a time budget: fold by fold, and within a fold the costliest candidates first
    (by complexity rank), so that a worker reuses a fold's prepared rows for several
    candidates and the cheap fits fill the gaps at the end. Under a time budget: candidate
    by candidate, cheapest first, so that as many candidates as possible finish all folds.
    When the candidates share no preparation, candidate by candidate in the given order.
    """
    if not budgeted and not shared_prep:
        return [Task(name, (name, i)) for name in candidates for i in range(n_folds)]
    if budgeted:  # defaults before any (costlier) tuned variant, each group cheapest first
        names = sorted(candidates, key=lambda n: (is_tuned(n), complexity(n)))
        return [Task(name, (name, i)) for name in names for i in range(n_folds)]
    names = sorted(candidates, key=lambda n: (is_tuned(n), complexity(n)), reverse=True)
    return [Task(name, (name, i)) for i in range(n_folds) for name in names]


def _by_candidate(tasks: Sequence[Task], outcomes: Sequence[Outcome], names: Sequence[str], n_folds: int) -> list[Outcome]:
    """Outcomes reordered candidate by candidate (in `names` order), then fold by fold."""
    position = {task.args: k for k, task in enumerate(tasks)}
    return [outcomes[position[(name, i)]] for name in names for i in range(n_folds)]


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
    """A candidate's fold results, in fold order; a fold with no result carries its outcome's error.

    A fold that was run again because its worker died (on Dask) says so in its warnings.
    """
    results = []
    for i, o in enumerate(outcomes):
        result = o.value if not o.error else FoldResult(name, i, {}, math.nan, math.nan, error=o.error)
        if o.retries and isinstance(result, FoldResult):
            lost = f"fold {i + 1}: {RETRIED} {o.retries} time(s)"
            result = dataclasses.replace(result, warnings=(*result.warnings, lost))
        results.append(result)
    return results


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


PREPARED_CACHE_BYTES = 600 * 2**20
"""Most bytes of prepared (transformed) folds a worker process keeps for the next candidate on the same fold."""
_prepared: OrderedDict[tuple[str, int], tuple[Any, Any, float]] = OrderedDict()
"""Per worker process: `(preprocessor key, fold) -> (prepared train rows, prepared test rows, seconds it took)`."""
_prepared_lock = threading.Lock()


def _run_fold(shared: tuple[Any, ...], args: tuple[str, int]) -> FoldResult:
    """One task of the pool: fit candidate `name` on fold `i` of the shared data."""
    candidates, prep_keys, X, y, folds, metrics, classes = shared
    name, i = args
    return _fit_and_score(name, candidates[name], prep_keys.get(name, ""), X, y, folds[i], i, metrics, classes)


def _preprocessor_keys(candidates: Mapping[str, Any]) -> dict[str, str]:
    """Candidates whose first step prepares the data the same way share a key; the others get none."""
    keys = {}
    for name, pipeline in candidates.items():
        if isinstance(pipeline, Pipeline) and len(pipeline.steps) == 2 and pipeline.steps[0][0] == "prepare":
            keys[name] = joblib.hash(pipeline.steps[0][1])
    return keys


def _prepare_fold(
    key: str, preprocessor: BaseEstimator, X: pd.DataFrame, y: pd.Series, fold: tuple[np.ndarray, np.ndarray], index: int
) -> tuple[Any, Any, float]:
    """The fold's rows prepared by a clone of `preprocessor` fitted on its training rows, cached per worker.

    Every candidate fits the same preprocessing on the same fold, so a worker fits it once
    per fold and gives the prepared rows to each candidate it runs on that fold. The result
    is what the candidate's own pipeline would compute: the same fit on the same rows.
    """
    with _prepared_lock:  # a Dask worker may run several tasks at once, in threads
        if (key, index) in _prepared:
            _prepared.move_to_end((key, index))
            return _prepared[(key, index)]
        for stale in [k for k in _prepared if k[0] != key]:  # another comparison's, or another preprocessor's
            del _prepared[stale]
        # Make room first: a new fold is about as large as a cached one, and holding both while
        # preparing the new one would be the worker's peak memory on large data.
        sizes = [_cached_bytes(entry) for entry in _prepared.values()]
        while _prepared and sum(sizes) + max(sizes) > PREPARED_CACHE_BYTES:
            _prepared.popitem(last=False)
            sizes.pop(0)
    train, test = fold
    start = time.perf_counter()
    prep = clone(preprocessor)
    Xt_train = prep.fit_transform(X.iloc[train], y.iloc[train])
    Xt_test = prep.transform(X.iloc[test])
    entry = (Xt_train, Xt_test, time.perf_counter() - start)
    with _prepared_lock:
        if _cached_bytes(entry) + sum(_cached_bytes(e) for e in _prepared.values()) <= PREPARED_CACHE_BYTES:
            _prepared[(key, index)] = entry
    return entry


def _cached_bytes(entry: tuple[Any, Any, float]) -> int:
    return _nbytes(entry[0]) + _nbytes(entry[1])


def _nbytes(a: Any) -> int:
    return int(a.memory_usage(deep=True).sum()) if isinstance(a, pd.DataFrame) else int(getattr(a, "nbytes", 0) or 0)


def _fit_and_score(
    name: str,
    pipeline: Pipeline,
    prep_key: str,
    X: pd.DataFrame,
    y: pd.Series,
    fold: tuple[np.ndarray, np.ndarray],
    index: int,
    metrics: tuple[Metric, ...],
    classes: np.ndarray | None,
) -> FoldResult:
    train, test = fold
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            if prep_key:  # shared preparation: fit only the model step on the prepared rows
                Xt_train, Xt_test, prep_seconds = _prepare_fold(prep_key, pipeline.steps[0][1], X, y, fold, index)
                start = time.perf_counter() - prep_seconds  # the fold's fit time includes its preparation
                model: Any = clone(pipeline.steps[-1][1]).fit(Xt_train, y.iloc[train])
                X_test = Xt_test
            else:
                model = clone(pipeline).fit(X.iloc[train], y.iloc[train])
                X_test = X.iloc[test]
            fitted = time.perf_counter()
            pred, proba = predict_with_proba(model, X_test, classes)
            predicted = time.perf_counter()
            scores = score_all(metrics, y.iloc[test].to_numpy(), pred, proba, classes)
        except Exception as exc:  # a candidate's failure is a result, not a crash
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, MemoryError):
                error = f"out of memory ({error})"
            return FoldResult(name, index, {}, time.perf_counter() - start, math.nan, error, worker=_worker_id())
    messages = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    search = model.steps[-1][1] if isinstance(model, Pipeline) else model
    chosen = {k: _param_text(v) for k, v in getattr(search, "best_params_", {}).items()}
    return FoldResult(
        name, index, scores, fitted - start, predicted - fitted, warnings=messages, worker=_worker_id(), best_params=chosen
    )


def _param_text(value: Any) -> str:
    """A parameter as short, stable text: `loguniform(0.001, 1000)` for a distribution, 3 digits for a float."""
    if hasattr(value, "dist") and hasattr(value, "args"):  # a frozen scipy.stats distribution
        return f"{value.dist.name}({', '.join(f'{a:g}' if isinstance(a, float) else str(a) for a in value.args)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_param_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def hyperparameters(estimator: Any) -> dict[str, Any]:
    """An estimator's full hyperparameters, flattened as scikit-learn names them (`estimator__max_depth`).

    A nested estimator appears as its class name beside its own parameters; scikit-learn's
    placeholder for a deprecated parameter (the text `deprecated`) is left out; values are
    plain JSON types (a tuple of numbers as a list; anything else as its `repr`).

    Args:
        estimator: A scikit-learn estimator, fitted or not.

    Returns:
        `{name: value}`, sorted by name.
    """
    flat: dict[str, Any] = {}
    for key, value in sorted(estimator.get_params(deep=True).items()):
        if isinstance(value, str) and value == "deprecated":
            continue
        if hasattr(value, "get_params"):
            flat[key] = type(value).__name__
        elif isinstance(value, np.generic):
            flat[key] = value.item()
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            flat[key] = list(value)
        else:
            flat[key] = repr(value)
    return flat


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _summarise(name: str, pipeline: Pipeline, folds: list[FoldResult]) -> CandidateResult:
    estimator = pipeline.steps[-1][1]
    folds = sorted(folds, key=lambda f: f.fold)
    seen_warnings = tuple(dict.fromkeys(w for f in folds for w in f.warnings))
    failed = [f for f in folds if f.error]
    late = [f for f in failed if f.error == NOT_IN_BUDGET]
    skipped = [f for f in failed if f.error.startswith(RACED_OUT_PREFIX)]
    inner = estimator
    while isinstance(inner, (RowSubsample, EarlyStoppingClassifier)):  # crispml's wrappers: the export holds the inner one
        inner = inner.estimator
    searched = inner
    while hasattr(searched, "param_distributions"):  # a tuned candidate: its search's estimator (defaults; fold_params has the choices)
        searched = searched.estimator
    params = {k: _param_text(v) for k, v in hyperparameters(searched).items()}  # the exported estimator's, in full
    common = {
        "name": name,
        "estimator": type(inner).__name__,
        "strategy": describe_strategy(estimator),
        "params": params,
        "warnings": seen_warnings,
        "workers": tuple(f.worker for f in folds),
    }
    if late and len(late) == len(failed):
        done = len(folds) - len(late)
        return CandidateResult(status=UNFINISHED, error=f"{done} of {len(folds)} folds done; {NOT_IN_BUDGET}", **common)
    done = [f for f in folds if not f.error]
    if skipped and len(skipped) + len(late) == len(failed) and done:  # the folds so far, and why it stopped there
        status, error = RACED_OUT, skipped[0].error
    elif failed:
        return CandidateResult(status=FAILED, error=f"fold {failed[0].fold + 1}: {failed[0].error}", **common)
    else:
        status, error = OK, ""
    return CandidateResult(
        status=status,
        error=error,
        fold_scores={m: tuple(f.scores[m] for f in done) for m in done[0].scores},
        fit_seconds=float(np.mean([f.fit_seconds for f in done])),
        predict_seconds=float(np.mean([f.predict_seconds for f in done])),
        fold_params=tuple(f.best_params for f in done) if any(f.best_params for f in done) else (),
        **common,
    )
