"""What a worker does with one (candidate, fold): prepare the fold's rows, fit, predict and score.

This runs in the executor's workers (`stages.fitting`), one task at a time. Candidates that
share a preprocessor share its prepared rows: each worker keeps the prepared folds of the
current comparison in a small process-wide cache (with its lock, since a Dask worker runs
tasks in threads), so a fold is transformed once per worker, not once per candidate.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline

from stages.metrics import Metric, score_all


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


def run_fold(shared: tuple[Any, ...], args: tuple[str, int]) -> FoldResult:
    """One task of the pool: fit candidate `name` on fold `i` of the shared data."""
    candidates, prep_keys, X, y, folds, metrics, classes = shared
    name, i = args
    return _fit_and_score(name, candidates[name], prep_keys.get(name, ""), X, y, folds[i], i, metrics, classes)


def preprocessor_keys(candidates: Mapping[str, Any]) -> dict[str, str]:
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
    chosen = {k: param_text(v) for k, v in getattr(search, "best_params_", {}).items()}
    return FoldResult(
        name, index, scores, fitted - start, predicted - fitted, warnings=messages, worker=_worker_id(), best_params=chosen
    )


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def param_text(value: Any) -> str:
    """A parameter as short, stable text: `loguniform(0.001, 1000)` for a distribution, 3 digits for a float."""
    if hasattr(value, "dist") and hasattr(value, "args"):  # a frozen scipy.stats distribution
        return f"{value.dist.name}({', '.join(f'{a:g}' if isinstance(a, float) else str(a) for a in value.args)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {param_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)
