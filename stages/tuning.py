"""Tuning (`--tune`): a tuned variant of each candidate, searched by successive halving.

Each candidate family has a small search space (its `stages.model_registry.ModelSpec.space`), written on base parameter
names (`C`, `max_depth`, ...). The registry's estimators are wrapped, and how depends on
the task and the data size: `CalibratedClassifierCV(SVC)`, `TransformedTargetRegressor(SVR)`,
and so on. So each base name is mapped onto the one nested parameter of the estimator
actually built whose name ends in it (`estimator__C`, `regressor__C`). A base name that
the estimator in use does not have is left out of its space: `epsilon` exists for SVR
only. A family whose space ends up empty gets no tuned variant; `linear` regression
(`LinearRegression`) is such a case.

`tuned_candidates` wraps the model step of each candidate in a `HalvingRandomSearchCV`
(`<name>:tuned`). The outer cross-validation fits the whole pipeline on each outer
training fold, so the search runs inside it: nested cross-validation on the same outer
folds, under the same time limits as every other candidate. The search wraps the model
step only, so the preprocessor is fitted once per outer training fold, before the search
splits it; what it learns (medians, scales, category counts) holds no target information.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (HalvingRandomSearchCV is experimental)
from sklearn.model_selection import HalvingRandomSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from stages.metrics import METRICS
from stages.understanding import CLASSIFICATION

TUNED_SUFFIX = ":tuned"
"""Appended to a candidate's name for its tuned variant: `svm` -> `svm:tuned`."""

N_CANDIDATES = 12
"""Parameter settings drawn per search. With `FACTOR` 3 the search runs three rounds:
12 settings on a ninth of the training rows, the best 4 on a third, the best 2 on all of
them, each round scored by `INNER_FOLDS`-fold cross-validation; then the best is refitted.
That costs about ten fits of the default candidate on all rows (more for a model whose fit
time grows faster than its rows, e.g. an SVM)."""
FACTOR = 3
"""Successive halving keeps the best third of the settings each round and triples their rows."""
INNER_FOLDS = 3
"""Cross-validation folds of the search inside each outer training fold."""
def tuned_name(name: str) -> str:
    """The name of a candidate's tuned variant (`svm` -> `svm:tuned`)."""
    return f"{name}{TUNED_SUFFIX}"


def is_tuned(name: str) -> bool:
    """Whether a candidate name is a tuned variant."""
    return name.endswith(TUNED_SUFFIX)


def default_name(name: str) -> str:
    """The candidate a name belongs to: `svm:tuned` -> `svm`; `svm` -> `svm`."""
    return name[: -len(TUNED_SUFFIX)] if is_tuned(name) else name


def scorer(metric: str, task: str) -> Any:
    """The scikit-learn scorer that scores like the crispml metric of the same name.

    Args:
        metric: A name from `stages.metrics.METRICS`.
        task: The task (`roc_auc` is one-vs-rest for multiclass, as in `stages.metrics`).

    Returns:
        A picklable scorer; greater is better, as for every scikit-learn scorer.

    Raises:
        ValueError: The metric does not apply to the task, or has no scorer here.
    """
    if metric not in METRICS or task not in METRICS[metric].tasks:
        raise ValueError(f"metric '{metric}' does not apply to a {task} task; there is no scorer to tune it with")
    make = METRICS[metric].scorer
    if make is None:
        raise ValueError(f"metric '{metric}' has no scikit-learn scorer; give its METRICS entry one")
    return make(task)


def search_space(family: str, estimator: BaseEstimator, base: Mapping[str, Any]) -> dict[str, Any]:
    """A family's search space on the parameter names of the estimator actually built.

    Args:
        family: The candidate's short name (`svm`), for the error.
        estimator: Its unfitted model step, possibly wrapped.
        base: The family's space on base parameter names (`ModelSpec.space`).

    Returns:
        `{nested parameter name: distribution or list}`; base names the estimator does not
        have are left out, so it may be empty.

    Raises:
        ValueError: A base name matches more than one parameter of the estimator.
    """
    params = estimator.get_params(deep=True)
    space = {}
    for name, values in base.items():
        matches = [p for p in params if p == name or p.endswith(f"__{name}")]
        if len(matches) > 1:
            raise ValueError(
                f"the search space of '{family}' names '{name}', which matches {len(matches)} parameters of "
                f"{type(estimator).__name__} ({', '.join(matches)}); write it as a longer suffix in its ModelSpec.space"
            )
        if matches:
            space[matches[0]] = values
    return space


def tuned_candidates(
    candidates: Mapping[str, Pipeline], task: str, metric: str, seed: int, spaces: Mapping[str, Mapping[str, Any]]
) -> dict[str, Pipeline]:
    """A tuned variant of every candidate that has a search space.

    Args:
        candidates: Unfitted pipelines by name (`stages.model_registry.build_candidates`); the
            last step is the model.
        task: The task.
        metric: The primary metric, which the search maximises (minimises, for a loss).
        seed: Random seed of the draws, the inner folds and the row subsamples.
        spaces: Each family's space on base parameter names (`stages.model_registry.search_spaces`).

    Returns:
        `{"<name>:tuned": pipeline}`: the same steps, cloned, with the model step replaced by
        a `HalvingRandomSearchCV` over it (refitted on the whole training fold with the best
        setting). Candidates without a space (`baseline`, linear regression) are left out.

    Raises:
        ValueError: A search space does not map onto its estimator (see `search_space`), or
            the metric has no scorer.
    """
    scoring = scorer(metric, task)
    inner = (
        StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed)
        if task in CLASSIFICATION
        # Shuffled: an outer training fold keeps the file's row order, which is often sorted.
        else KFold(INNER_FOLDS, shuffle=True, random_state=seed)
    )
    tuned = {}
    for name, pipeline in candidates.items():
        *steps, (model_step, model) = pipeline.steps
        space = search_space(name, model, spaces.get(name, {}))
        if not space:
            continue
        search = HalvingRandomSearchCV(
            clone(model),
            space,
            n_candidates=N_CANDIDATES,
            factor=FACTOR,
            min_resources="exhaust",  # the last round uses (nearly) every row
            cv=inner,
            scoring=scoring,
            refit=True,
            error_score=np.nan,  # a setting that fails to fit scores NaN and drops out
            return_train_score=False,
            random_state=seed,
            n_jobs=1,  # the outer pool already uses every core
        )
        tuned[tuned_name(name)] = Pipeline([*((n, clone(s)) for n, s in steps), (model_step, search)])
    return tuned


@dataclass(frozen=True)
class Unwrapped:
    """A fitted pipeline with its search replaced by the estimator the search chose.

    Attributes:
        model: The fitted pipeline; its steps are plain estimators.
        best_params: The chosen setting (`{nested parameter name: value}`); empty when the
            pipeline held no search.
        search: The search's class name, or "" when there was none.
        inner_score: The chosen setting's mean score in the search's last round (a
            scikit-learn score: greater is better, losses negated), or NaN.
    """

    model: Pipeline
    best_params: dict[str, Any]
    search: str = ""
    inner_score: float = math.nan


def unwrap_search(fitted: Pipeline) -> Unwrapped:
    """Replace a fitted search in the model step by its refitted best estimator.

    The saved model then holds only plain estimators (nothing for skops to trust beyond
    the usual), and its hyperparameters can be read off it.

    Args:
        fitted: A fitted pipeline, tuned or not.

    Returns:
        The pipeline (the same object when it holds no search) and what was chosen.
    """
    *steps, (model_step, model) = fitted.steps
    best = getattr(model, "best_estimator_", None)
    if best is None:
        return Unwrapped(model=fitted, best_params={})
    params = {k: v.item() if isinstance(v, np.generic) else v for k, v in model.best_params_.items()}
    return Unwrapped(
        model=Pipeline([*steps, (model_step, best)]),
        best_params=params,
        search=type(model).__name__,
        inner_score=float(model.best_score_),
    )
