"""Choosing the model from the leaderboard: how much worse each candidate is, and the selection rule.

- `loss_posterior` is the Bayesian correlated t-test (Corani and Benavoli, 2015): from two
  candidates' paired per-fold scores, the chance that one loses more than a tolerance
  against the other, allowing for the overlap of CV training sets.
- `corrected_ttest` is the corrected resampled t-test of Nadeau and Bengio (2003) on the
  same scores; its p-value is shown on the leaderboard for information.
- `select_model` applies the selection rule: `simplest_equivalent` (default) takes the
  simplest candidate practically as good as the top one (likely to lose at most the
  tolerance against it); `best_mean` takes the top one.
- `annotated_leaderboard` is the leaderboard with each candidate's comparison and the chosen row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from stages.metrics import METRICS
from stages.model_registry import complexity as complexity_of
from stages.modeling import OK, CandidateResult, Leaderboard
from stages.tuning import default_name, is_tuned

SIMPLEST_EQUIVALENT = "simplest_equivalent"
BEST_MEAN = "best_mean"
SELECTION_RULES = (SIMPLEST_EQUIVALENT, BEST_MEAN)
"""The selection rules, the default first."""
SIMPLEST_WITHIN_NOISE = "simplest_within_noise"
DEPRECATED_RULES: Mapping[str, str] = {SIMPLEST_WITHIN_NOISE: SIMPLEST_EQUIVALENT}
"""Old rule names still accepted, and the rule each now stands for."""
BASELINE = "baseline"
"""The dummy candidate: the floor a model must beat, never chosen while another candidate succeeded."""


class SelectionSettings(Protocol):
    """What the selection rule reads: the config's `[evaluation]` section has it.

    Attributes:
        selection: `simplest_equivalent`, `best_mean` (or the deprecated `simplest_within_noise`).
        alpha: The largest accepted chance of losing more than the tolerance; also the
            significance level of the informational t-test.
        tolerance: The tolerance in the metric's units, for a metric with a fixed scale.
        relative_tolerance: The tolerance as a share of the top one's |mean score|, for a
            metric whose `Metric.relative_tolerance` is set (rmse, mae, log_loss).
    """

    @property
    def selection(self) -> str: ...

    @property
    def alpha(self) -> float: ...

    @property
    def tolerance(self) -> float: ...

    @property
    def relative_tolerance(self) -> float: ...


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
    settings: SelectionSettings,
    n_train: float,
    n_test: float,
    complexity: Mapping[str, float] | None = None,
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
        settings: The rule, its alpha and its tolerances (`SelectionSettings`).
        n_train: Training rows per fold (mean), for the correction for overlapping folds.
        n_test: Test rows per fold (mean).
        complexity: `{name: rank}`, simplest lowest; default: `stages.model_registry.complexity`, each
            model's `stages.model_registry.MODELS` entry, a `:tuned` variant just above its default
            (unknown names rank last).

    Returns:
        The selection.

    Raises:
        ValueError: An unknown rule, or no candidate that did not fail.
    """
    rule, alpha = settings.selection, settings.alpha
    applied = DEPRECATED_RULES.get(rule, rule)
    if applied not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule '{rule}'; use {' or '.join(SELECTION_RULES)}")
    m = board.metric
    metric = METRICS[m]
    ok = [r for r in board.rows if r.status == OK and not math.isnan(r.mean(m))]
    if not ok:
        raise ValueError("no candidate finished cross-validation; there is nothing to choose from")
    top = ok[0]
    tol, basis = metric.tolerance(top.mean(m), settings.tolerance, settings.relative_tolerance)
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
    if not is_tuned(name) or default is None or rows[name].status != OK or default.status != OK:
        return math.nan  # a failed or raced-out row's mean covers other folds
    metric = METRICS[board.metric]
    return metric.better(rows[name].mean(metric.name), default.mean(metric.name))
