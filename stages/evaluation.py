"""CRISP-DM phase 5, evaluation: is the model really better, and does it meet the business goal?

- `loss_posterior` is the Bayesian correlated t-test (Corani and Benavoli, 2015): from two
  candidates' paired per-fold scores, the chance that one loses more than a tolerance
  against the other, allowing for the overlap of CV training sets.
- `corrected_ttest` is the corrected resampled t-test of Nadeau and Bengio (2003) on the
  same scores; its p-value is shown on the leaderboard for information.
- `select_model` applies the selection rule: `simplest_equivalent` (default) takes the
  simplest candidate practically as good as the top one (likely to lose at most the
  tolerance against it); `best_mean` takes the top one.
- `evaluate_holdout` scores the chosen candidate on the untouched holdout and flags a
  holdout score far outside its cross-validated spread.
- `decide` is the go/no-go gate: every business criterion written down before training
  must hold on the holdout, else no-go with each failed criterion named.
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from stages.metrics import DEFAULT_RELATIVE_TOLERANCE, DEFAULT_TOLERANCE, METRICS, Metric, metrics_for, score_all
from stages.modeling import OK, CandidateResult, Leaderboard, predict_with_proba
from stages.modeling import complexity as complexity_of
from stages.preparation import Split
from stages.tuning import default_name, is_tuned
from stages.understanding import CLASSIFICATION

SIMPLEST_EQUIVALENT = "simplest_equivalent"
BEST_MEAN = "best_mean"
SELECTION_RULES = (SIMPLEST_EQUIVALENT, BEST_MEAN)
"""The selection rules, the default first."""
SIMPLEST_WITHIN_NOISE = "simplest_within_noise"
DEPRECATED_RULES: Mapping[str, str] = {SIMPLEST_WITHIN_NOISE: SIMPLEST_EQUIVALENT}
"""Old rule names still accepted, and the rule each now stands for."""
BASELINE = "baseline"
"""The dummy candidate: the floor a model must beat, never chosen while another candidate succeeded."""
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
    pred, proba = predict_with_proba(model, split.X_test, classes)
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
    )


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
    rows = importance_rows(candidate, len(split.y_train), min(split.X_test.shape[1], MAX_IMPORTANCE_COLUMNS))
    importance = permutation_importances(
        result.fitted, split.X_test, split.y_test, metric, result.classes, seed, max_rows=rows
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


def importance_rows(candidate: CandidateResult, n_train: int, n_features: int, n_repeats: int = 5) -> int:
    """How many holdout rows permutation importance can afford for this candidate.

    Each of `n_features * n_repeats` shuffles predicts every sampled row once. A model that
    predicts slowly (an exact kernel SVM with thousands of support vectors) gets fewer rows,
    so that the importances cost about `IMPORTANCE_SECONDS`, within `IMPORTANCE_ROWS`.

    Args:
        candidate: The candidate's cross-validation result (its mean predict time per test fold).
        n_train: Rows of the training part (the folds' test parts add up to it).
        n_features: Input columns, each shuffled `n_repeats` times.
        n_repeats: Shuffles per column.

    Returns:
        The row count.
    """
    lo, hi = IMPORTANCE_ROWS
    folds = max((len(v) for v in candidate.fold_scores.values()), default=0)
    if not folds or not math.isfinite(candidate.predict_seconds) or candidate.predict_seconds <= 0:
        return hi
    seconds_per_row = candidate.predict_seconds / (n_train / folds)
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
class PairedTest:
    """Two candidates' scores on the same folds, compared.

    Attributes:
        mean_diff: Mean of `a - b` over the folds.
        t: The corrected t statistic.
        df: Degrees of freedom (folds - 1).
        p_value: Two-sided p-value: how likely a difference this large is if the two
            candidates are equally good.
    """

    mean_diff: float
    t: float
    df: int
    p_value: float


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Two paired fold-score arrays, checked, and the size below which their differences are float noise."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two equally long lists of at least 2 paired fold scores, got {len(x)} and {len(y)}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("fold scores hold NaN; a paired test needs a score on every fold")
    largest = float(np.abs(np.concatenate([x, y])).max())
    return x, y, 1e-12 * max(1.0, largest if math.isfinite(largest) else 1.0)


def corrected_ttest(a: Sequence[float], b: Sequence[float], n_train: float, n_test: float) -> PairedTest:
    """The corrected resampled t-test (Nadeau and Bengio, 2003) on paired per-fold scores.

    Folds of one cross-validation share most of their training rows, so the per-fold
    differences are correlated and a plain paired t-test is far too confident. The
    correction inflates the variance of the mean difference from `var/k` to
    `(1/k + n_test/n_train) * var`: t = mean(d) / sqrt((1/k + n_test/n_train) * var(d)),
    with k - 1 degrees of freedom.

    It answers "is there evidence of a difference?", which is not the question a
    selection rule needs: on 5 folds it rarely finds one even between very different
    candidates (see `loss_posterior`). The leaderboard shows it as information.

    Args:
        a: One candidate's per-fold scores.
        b: The other's, on the same folds in the same order.
        n_train: Training rows per fold (mean).
        n_test: Test rows per fold (mean).

    Returns:
        The test. Identical scores give p = 1; a constant non-zero difference (zero
        variance) gives p = 0.

    Raises:
        ValueError: The score lists differ in length, have fewer than 2 folds, or hold NaN.
    """
    x, y, noise = _paired(a, b)
    d = x - y
    k = len(d)
    mean = float(d.mean())
    if np.ptp(d) <= noise:  # zero variance: no noise to test against
        same = abs(mean) <= noise
        return PairedTest(mean_diff=mean, t=0.0 if same else math.copysign(math.inf, mean), df=k - 1, p_value=1.0 if same else 0.0)
    variance = float(d.var(ddof=1)) * (1.0 / k + n_test / n_train)
    t = mean / math.sqrt(variance)
    return PairedTest(mean_diff=mean, t=t, df=k - 1, p_value=float(2.0 * stats.t.sf(abs(t), k - 1)))


@dataclass(frozen=True)
class LossPosterior:
    """What the folds say about how much worse one candidate is than another (see `loss_posterior`).

    Attributes:
        expected_loss: Posterior mean of the loss: the mean over folds of how much better
            the reference candidate scored, in the metric's units (positive: it is better).
        scale: Scale of the posterior Student t (0 when every fold showed the same loss).
        df: Its degrees of freedom (folds - 1).
        tolerance: The largest loss that counts as practically as good, in the metric's units.
        p_worse: Posterior probability that the loss exceeds `tolerance`.
    """

    expected_loss: float
    scale: float
    df: int
    tolerance: float
    p_worse: float

    def equivalent(self, alpha: float) -> bool:
        """Practically as good: the chance of losing more than the tolerance is at most `alpha`."""
        return self.p_worse <= alpha


def loss_posterior(
    reference: Sequence[float],
    other: Sequence[float],
    n_train: float,
    n_test: float,
    tolerance: float,
    *,
    greater_is_better: bool = True,
) -> LossPosterior:
    """The Bayesian correlated t-test: how likely `other` loses more than `tolerance` against `reference`.

    The loss on fold i is how much better `reference` scored than `other` there (signed by
    the metric's direction). Corani and Benavoli (2015; Benavoli et al. 2017, "Time for a
    change", JMLR 18) model the correlation between folds that share training rows: the
    posterior of the mean loss is a Student t with k - 1 degrees of freedom, location
    mean(d) and scale sqrt((1/k + n_test/n_train) * var(d)) (variance with ddof 1), the
    same correction as `corrected_ttest`. `p_worse` is its mass above `tolerance`: a
    region of practical equivalence on the one side that matters (a candidate better than
    the reference is no reason to refuse it). Numerically it equals the one-sided p-value
    of the corrected t-test of "the loss is at least the tolerance" (one half of a TOST).

    Unlike "not significantly different", a small `p_worse` needs evidence: a candidate
    whose fold scores swing widely gets a wide posterior and a large `p_worse`, however
    small its mean loss. The function is pure and cheap, so a racing rule can call it on
    the folds seen so far.

    Args:
        reference: The reference candidate's per-fold scores (the top one).
        other: The other candidate's, on the same folds in the same order.
        n_train: Training rows per fold (mean).
        n_test: Test rows per fold (mean).
        tolerance: The largest loss that still counts as practically as good, in the
            metric's units (0 or more).
        greater_is_better: The metric's direction.

    Returns:
        The posterior. When every fold shows the same loss (zero variance) the loss is
        known exactly: `p_worse` is 1 if it exceeds the tolerance, else 0.

    Raises:
        ValueError: The score lists differ in length, have fewer than 2 folds or hold NaN,
            or the tolerance is negative or not finite.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0.0):
        raise ValueError(f"tolerance must be a finite number of 0 or more, in the metric's units, got {tolerance}")
    x, y, noise = _paired(reference, other)
    d = x - y if greater_is_better else y - x
    k = len(d)
    mean = float(d.mean())
    if np.ptp(d) <= noise:
        return LossPosterior(mean, 0.0, k - 1, tolerance, 1.0 if mean > tolerance + noise else 0.0)
    scale = math.sqrt((1.0 / k + n_test / n_train) * float(d.var(ddof=1)))
    return LossPosterior(mean, scale, k - 1, tolerance, float(stats.t.sf(tolerance, k - 1, loc=mean, scale=scale)))


@dataclass(frozen=True)
class Comparison:
    """One candidate against the top of the leaderboard.

    Attributes:
        name: The candidate.
        mean_diff: Its mean score minus the top one's, in the metric's units (0 for the top).
        p_value: Two-sided p-value of the corrected resampled t-test (1 for the top);
            information only, no rule uses it.
        within_noise: Not significantly different from the top one (p >= alpha);
            information only (it is what the old `simplest_within_noise` rule used).
        expected_loss: How much worse than the top one it is expected to be, in the
            metric's units whatever its direction (positive: worse; 0 for the top).
        p_worse: The chance that it loses more than the tolerance against the top one
            (`loss_posterior`; 0 for the top).
        equivalent: Practically as good as the top one: `p_worse <= alpha`.
    """

    name: str
    mean_diff: float
    p_value: float
    within_noise: bool
    expected_loss: float
    p_worse: float
    equivalent: bool


@dataclass(frozen=True)
class Selection:
    """Which candidate was chosen, by which rule, and why.

    Attributes:
        chosen: The chosen candidate's name.
        top: The candidate with the best mean score.
        rule: The rule applied: `simplest_equivalent` or `best_mean` (a deprecated name
            in the config is recorded as the rule it stands for; the reason says so).
        alpha: The largest accepted chance of losing more than the tolerance (also the
            significance level of the informational t-test).
        metric: The primary metric.
        tolerance: The largest loss against the top one that counts as practically as
            good, in the metric's units.
        tolerance_basis: How `tolerance` was derived (`0.005 balanced_accuracy`, or
            `1% of the top one's 290.3 rmse = 2.903`).
        reason: One sentence a person can check against the leaderboard.
        comparisons: Every candidate that did not fail, in leaderboard order.
    """

    chosen: str
    top: str
    rule: str
    alpha: float
    metric: str
    tolerance: float
    tolerance_basis: str
    reason: str
    comparisons: tuple[Comparison, ...]

    def comparison(self, name: str) -> Comparison | None:
        """The comparison of one candidate with the top one, or None for a failed candidate."""
        return next((c for c in self.comparisons if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The selection as JSON-friendly values."""
        return asdict(self)


def select_model(
    board: Leaderboard,
    rule: str,
    alpha: float,
    n_train: float,
    n_test: float,
    complexity: Mapping[str, float] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
) -> Selection:
    """Choose the model to evaluate and deploy from the leaderboard.

    Every candidate that did not fail is compared with the top one (best mean score) on
    its paired fold scores by `loss_posterior` (and, for information, `corrected_ttest`).
    Then:

    - `simplest_equivalent`: among the candidates practically as good as the top one
      (the chance that they lose more than the tolerance is at most `alpha`), the simplest
      by `complexity`, ties broken by measured predict time. The top one is always among
      them, so the rule never trades away more than the tolerance without evidence.
    - `best_mean`: the top one.
    - `simplest_within_noise`: a deprecated name for `simplest_equivalent`. (It used to
      take the simplest candidate "not significantly worse", which on 5 folds accepted
      much worse, unstable candidates.)

    The `baseline` is the floor, not a model to ship: it is chosen only when it is the
    only candidate that did not fail (and then the gate's margin over the baseline fails).

    Args:
        board: The leaderboard, best first.
        rule: `simplest_equivalent`, `best_mean` (or the deprecated `simplest_within_noise`).
        alpha: The largest accepted chance of losing more than the tolerance; also the
            significance level of the informational t-test.
        n_train: Training rows per fold (mean), for the correction for overlapping folds.
        n_test: Test rows per fold (mean).
        complexity: `{name: rank}`, simplest lowest; default: `stages.modeling.complexity`, each
            model's `stages.modeling.MODELS` entry, a `:tuned` variant just above its default
            (unknown names rank last).
        tolerance: The tolerance in the metric's units, for a metric with a fixed scale.
        relative_tolerance: The tolerance as a share of the top one's |mean score|, for a
            metric whose `Metric.relative_tolerance` is set (rmse, mae, log_loss).

    Returns:
        The selection.

    Raises:
        ValueError: An unknown rule, or no candidate that did not fail.
    """
    applied = DEPRECATED_RULES.get(rule, rule)
    if applied not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule '{rule}'; use {' or '.join(SELECTION_RULES)}")
    m = board.metric
    metric = METRICS[m]
    ok = [r for r in board.rows if r.status == OK and not math.isnan(r.mean(m))]
    if not ok:
        raise ValueError("no candidate finished cross-validation; there is nothing to choose from")
    top = ok[0]
    tol, basis = metric.tolerance(top.mean(m), tolerance, relative_tolerance)
    comparisons = []
    for r in ok:
        if r is top:
            comparisons.append(Comparison(r.name, 0.0, 1.0, True, 0.0, 0.0, True))
            continue
        scores, top_scores = r.fold_scores[m], top.fold_scores[m]
        test = corrected_ttest(scores, top_scores, n_train, n_test)
        loss = loss_posterior(top_scores, scores, n_train, n_test, tol, greater_is_better=metric.greater_is_better)
        comparisons.append(
            Comparison(
                r.name, test.mean_diff, test.p_value, test.p_value >= alpha, loss.expected_loss, loss.p_worse, loss.equivalent(alpha)
            )
        )
    by_name = {c.name: c for c in comparisons}
    pool = [r for r in ok if r.name != BASELINE] or ok
    ranks = complexity if complexity is not None else {r.name: complexity_of(r.name) for r in ok}

    def simplicity(r: CandidateResult) -> tuple[float, float]:
        return ranks.get(r.name, math.inf), _or_inf(r.predict_seconds)

    equivalent = [r for r in pool if by_name[r.name].equivalent]
    if applied == BEST_MEAN or not equivalent:
        chosen = pool[0]
    else:
        chosen = min(equivalent, key=simplicity)
    challengers = [r for r in pool if simplicity(r) < simplicity(top) and not by_name[r.name].equivalent]
    evidence = _Evidence(metric=m, alpha=alpha, basis=basis, folds=len(top.fold_scores[m]), by_name=by_name)
    reason = _reason(applied, rule, top, chosen, equivalent, challengers, evidence)
    return Selection(
        chosen=chosen.name,
        top=top.name,
        rule=applied,
        alpha=alpha,
        metric=m,
        tolerance=tol,
        tolerance_basis=basis,
        reason=reason,
        comparisons=tuple(comparisons),
    )


def _or_inf(value: float) -> float:
    return math.inf if math.isnan(value) else value


@dataclass(frozen=True)
class _Evidence:
    """What the reason quotes: the metric, the tolerance and each candidate's comparison."""

    metric: str
    alpha: float
    basis: str
    folds: int
    by_name: Mapping[str, Comparison]

    @property
    def test(self) -> str:
        return f"Bayesian correlated t-test on {self.folds} folds; at most {self.alpha * 100:g}% accepted"

    def of(self, name: str) -> str:
        c = self.by_name[name]
        return (
            f"expected loss {c.expected_loss:.4f} {self.metric}, chance of losing more than the tolerance "
            f"({self.basis}) is {c.p_worse:.1%}"
        )


def _reason(
    rule: str,
    configured: str,
    top: CandidateResult,
    chosen: CandidateResult,
    equivalent: list[CandidateResult],
    challengers: list[CandidateResult],
    ev: _Evidence,
) -> str:
    """The selection in one sentence, with the tolerance and the evidence it rests on."""
    name = rule if configured == rule else f"{rule} (configured as '{configured}', a deprecated name for it)"
    m = ev.metric
    if chosen.name == BASELINE:
        return f"{name}: every other candidate failed, so only the baseline is left"
    floor = f"; the baseline ({BASELINE}) is the top by mean but only the floor, never chosen" if top.name == BASELINE else ""
    if rule == BEST_MEAN:
        return f"{name}: {chosen.name} has the best mean {m} ({chosen.mean(m):.4f}){floor}"
    others = [r.name for r in equivalent if r is not chosen and r is not top]
    also = f"; also practically as good: {', '.join(others)}" if others else ""
    if chosen is not top and chosen in equivalent:
        return (
            f"{name}: {chosen.name} is the simplest candidate practically as good as the top one, {top.name}: "
            f"{ev.of(chosen.name)} ({ev.test}){also}{floor}"
        )
    if chosen is not top:  # the top is the baseline and nothing is practically as good as it
        return (
            f"{name}: no candidate is practically as good as the top one, the baseline (the floor, never chosen), "
            f"so the best by mean, {chosen.name}, is chosen: {ev.of(chosen.name)} ({ev.test})"
        )
    if not challengers:
        return (
            f"{name}: {top.name} has the best mean {m} ({top.mean(m):.4f}) and is also the simplest candidate "
            f"(the baseline aside), so there is nothing simpler to trade it for (tolerance {ev.basis}){also}"
        )
    closest = min(challengers, key=lambda r: (ev.by_name[r.name].p_worse, ev.by_name[r.name].expected_loss))
    return (
        f"{name}: {top.name} has the best mean {m} ({top.mean(m):.4f}) and is kept, as no simpler candidate is "
        f"practically as good; the closest, {closest.name}: {ev.of(closest.name)} ({ev.test}){also}"
    )


def annotated_leaderboard(board: Leaderboard, selection: Selection) -> pd.DataFrame:
    """The leaderboard table with each candidate's comparison with the top one and the chosen row.

    Args:
        board: The leaderboard.
        selection: The selection made from it.

    Returns:
        `board.to_frame()` with `chosen`, `diff_vs_top`, `p_value`, `within_noise`,
        `p_worse` and `equivalent` columns after `status` (NaN and False for failed
        candidates; see `Comparison`). When the board holds tuned variants (`<name>:tuned`,
        see `stages.tuning`), then also `tuned_vs_default`: a tuned row's mean score minus
        its default's, signed so that positive means tuning helped whatever the metric's
        direction (NaN on other rows, or when either failed), and `tuned_params`: the
        setting its search chose on each fold, folds separated by `|`.
    """
    frame = board.to_frame()
    found = [selection.comparison(name) for name in frame["model"]]
    at = list(frame.columns).index("status") + 1
    frame.insert(at, "chosen", [name == selection.chosen for name in frame["model"]])
    frame.insert(at + 1, "diff_vs_top", [c.mean_diff if c else math.nan for c in found])
    frame.insert(at + 2, "p_value", [c.p_value if c else math.nan for c in found])
    frame.insert(at + 3, "within_noise", [bool(c and c.within_noise) for c in found])
    frame.insert(at + 4, "p_worse", [c.p_worse if c else math.nan for c in found])
    frame.insert(at + 5, "equivalent", [bool(c and c.equivalent) for c in found])
    if any(is_tuned(name) for name in frame["model"]):
        frame.insert(at + 6, "tuned_vs_default", [_tuned_gain(board, name) for name in frame["model"]])
        params = {r.name: r.fold_params for r in board.rows}
        frame["tuned_params"] = [
            " | ".join(", ".join(f"{k}={v}" for k, v in fold.items()) for fold in params.get(name, ())) for name in frame["model"]
        ]
    return frame


def _tuned_gain(board: Leaderboard, name: str) -> float:
    """A tuned variant's mean score minus its default's, positive when better; NaN for other rows."""
    rows = {r.name: r for r in board.rows}
    default = rows.get(default_name(name))
    if not is_tuned(name) or default is None:
        return math.nan
    metric = METRICS[board.metric]
    return metric.better(rows[name].mean(metric.name), default.mean(metric.name))


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
        full = rest.copy()
        for column in X_.columns:  # one by one, so each keeps its dtype
            full[column] = X_[column].to_numpy()
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
