"""Phase 3, modeling: the candidates, compared by cross-validation on the same folds.

The candidates come from the registry (`stages.model_registry`). `compare_models` hands every
(candidate, fold) fit to one executor (`stages.fitting`: the wiring's pool of worker processes
or Dask cluster), scores each fold with every metric of the task (`stages.fold_fits`), and
turns a candidate that fails, hangs past its time limit or runs out of memory into a
leaderboard row with the reason instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from stages.early_stopping import EarlyStoppingClassifier
from stages.errors import DataError, Interrupted
from stages.fitting import IN_PROCESS, NOT_IN_BUDGET, Executor, Outcome, Task
from stages.fold_fits import FoldResult, param_text, preprocessor_keys, run_fold
from stages.metrics import METRICS, Metric, metrics_for
from stages.model_registry import complexity, describe_strategy
from stages.subsample import RowSubsample
from stages.tuning import is_tuned
from stages.understanding import CLASSIFICATION

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
    # 68 lines: the callbacks below close over this comparison's tasks and race; as functions of
    # their own each would take five of them as arguments, and the scheduling would read in five places.
    metrics = metrics_for(task)
    classes = np.unique(y.to_numpy()) if task in CLASSIFICATION else None
    names = list(candidates)
    # The preprocessor keys carry a token of this comparison: a worker (or this process) that
    # served an earlier one must not reuse prepared rows of other data.
    token = uuid.uuid4().hex
    keys = {name: f"{token}:{key}" for name, key in preprocessor_keys(candidates).items()}
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
            run_fold, shared, tasks, **limits, on_group_done=report, on_task_done=on_fit,
            judge=judge if race is not None else None, pick=pick if race is not None else None,
        )
        if race is not None:  # a verdict that rested on a rival which then failed: finish those folds after all
            ordered = _revive(race, tasks, ordered, lambda again: executor.run(run_fold, shared, again, **limits))
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
    params = {k: param_text(v) for k, v in hyperparameters(searched).items()}  # the exported estimator's, in full
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
