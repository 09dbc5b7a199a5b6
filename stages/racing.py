"""Racing: stop cross-validating a candidate once its folds so far show it cannot be chosen.

Most of a comparison's cost goes into finishing candidates that were out of the running
after two or three folds. Racing methods (F-race, Birattari et al. 2002; tidymodels'
`tune_race_anova`; Bergman, Purucker and Hutter, "Don't Waste Your Time: Early Stopping
Cross-Validation", AutoML 2024) evaluate fold by fold and drop a candidate as soon as the
evidence is against it. Here the evidence is the selection rule's own test
(`stages.selection.loss_posterior`): once every candidate still in the race has its first
`m` folds in (`m` from `RaceRule.min_folds` to the folds minus one), each is compared on
those folds with the best of the others; if the chance that it loses more than the
tolerance is at least `1 - alpha`, it is raced out. Such a candidate is not practically as
good as the leader, so neither selection rule would choose it, whichever candidate ends on
top, provided that leader finishes: a verdict whose rival (or whose rival's rival) fails
on a later fold is withdrawn (`Race.orphans`) and the candidate finishes its folds. Rounds
make the result independent of which fit finished first: the same data and seed give the
same leaderboard on any number of workers, locally or on Dask. `Race.pick` tells a free
worker which fit to start: the folds the next round needs, then the best-placed
candidate's, so that few fits go to candidates about to be raced out.

The baseline is never raced: it is the floor the go/no-go gate compares against, and cheap.
Nor is anything raced against it: when every model is worse than the dummy, the rule still
chooses among the models. The state is a plain object the modeling stage feeds fold scores
to (`Race.record`); it starts nothing and stops nothing itself.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from stages.metrics import DEFAULT_RELATIVE_TOLERANCE, DEFAULT_TOLERANCE, METRICS
from stages.modeling import RACED_OUT, RACED_OUT_PREFIX
from stages.selection import BASELINE, SelectionSettings, loss_posterior

__all__ = ["MIN_FOLDS", "RACED_OUT", "RACED_OUT_PREFIX", "Race", "RaceRule"]

MIN_FOLDS = 2
"""Folds a candidate and its rival must share before it can be raced out (tidymodels' `burn_in`,
at its smallest). On 2 folds the posterior is a Student t with 1 degree of freedom, whose heavy
tails race out only a candidate far behind on both folds alike: its loss minus the tolerance
must be about four times the difference between its two folds' losses."""


@dataclass(frozen=True)
class RaceRule:
    """When a candidate is raced out: the selection rule's settings, applied to the folds so far.

    Attributes:
        metric: The primary metric.
        alpha: The selection rule's alpha: a candidate is raced out once the chance that it
            loses more than the tolerance is at least `1 - alpha`.
        n_train: Training rows per fold (mean), for the correction for overlapping folds.
        n_test: Test rows per fold (mean).
        tolerance: The tolerance in the metric's units, for a metric with a fixed scale.
        relative_tolerance: The tolerance as a share of the rival's |mean score| otherwise.
        min_folds: Folds shared with the rival before a candidate can be raced out (at least 2).
        protected: Candidates never raced out, nor raced against (the baseline).
    """

    metric: str
    alpha: float
    n_train: float
    n_test: float
    tolerance: float = DEFAULT_TOLERANCE
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE
    min_folds: int = MIN_FOLDS
    protected: frozenset[str] = frozenset({BASELINE})

    @classmethod
    def following(cls, settings: SelectionSettings, metric: str, n_train: float, n_test: float) -> RaceRule:
        """The race that follows the selection rule: the same alpha and tolerances, on the folds so far.

        Args:
            settings: The selection rule's settings (the `[evaluation]` section).
            metric: The primary metric.
            n_train: Training rows per fold (mean).
            n_test: Test rows per fold (mean).

        Returns:
            The rule.
        """
        return cls(metric, settings.alpha, n_train, n_test, settings.tolerance, settings.relative_tolerance)


class Race:
    """The race of one comparison: the fold scores so far, and who is out.

    It judges in rounds, so that the outcome does not depend on which fit happened to
    finish first (on two workers or twenty, locally or on Dask): round `m` (from
    `RaceRule.min_folds` up to the folds minus one) closes once every candidate still in
    the race has its first `m` folds in, and judges each of them on exactly those folds
    against the others still in. A candidate raced out in round `m` keeps folds `0..m-1`
    on the leaderboard, whatever later folds were already running.

    Args:
        rule: When a candidate is raced out.
        names: The candidates.
        n_folds: Folds each candidate is cross-validated on.
    """

    def __init__(self, rule: RaceRule, names: Collection[str], n_folds: int) -> None:
        if rule.min_folds < 2:
            raise ValueError(f"racing needs at least 2 shared folds to compare candidates, got min_folds={rule.min_folds}")
        self.rule = rule
        self.n_folds = n_folds
        self.metric = METRICS[rule.metric]
        self.scores: dict[str, dict[int, float]] = {name: {} for name in names}
        self.out: dict[str, str] = {}
        """`{name: reason}` of the candidates raced out, in the order they went."""
        self.kept: dict[str, int] = {}
        """`{name: m}`: a raced-out candidate's leaderboard row holds its folds `0..m-1`."""
        self.rival: dict[str, str] = {}
        """`{name: rival}`: whom each raced-out candidate lost to."""
        self.failed_at: dict[str, int] = {}
        """`{name: fold}`: each candidate's first failed fold, as far as known."""
        self.next_round = rule.min_folds

    def record(self, name: str, fold: int, score: float) -> dict[str, str]:
        """Take one fold's score and say who is raced out by it.

        Args:
            name: The candidate.
            fold: The fold (0-based).
            score: Its primary-metric score there; NaN when the fold failed or was never
                run. A candidate that failed before fold `m` is not in round `m` (no round
                waits for it); one that fails later still races on its first folds, so
                the rounds do not depend on when the failure comes in.

        Returns:
            `{name: reason}` of the candidates raced out now (empty mostly).
        """
        if name not in self.scores or name in self.out:
            return {}
        if math.isfinite(score):
            self.scores[name][fold] = score
        else:
            self.failed_at[name] = min(fold, self.failed_at.get(name, fold))
        now: dict[str, str] = {}
        while self.next_round < self.n_folds:  # the last round would save nothing
            m = self.next_round
            field = self._racing(m)
            if any(any(f not in self.scores[n] for f in range(m)) for n in field):
                break
            verdicts = {n: self._judge(n, field, m) for n in field}  # all against the same field
            for n, (reason, rival) in verdicts.items():
                if reason:
                    self.out[n], self.kept[n], self.rival[n], now[n] = reason, m, rival, reason
            self.next_round += 1
        return now

    def orphans(self, finished: Collection[str]) -> list[str]:
        """The raced-out candidates whose verdict no longer stands, in the order they went.

        A candidate lost to a rival on their first folds; if that rival did not finish (it
        failed, timed out or ran out of budget on a later fold), the verdict rested on a
        model that is not on the leaderboard, and the candidate must finish its folds.
        A verdict stands when the chain of rivals ends at a finished candidate.

        Args:
            finished: The candidates that finished every fold.
        """

        def stands(name: str, seen: frozenset[str] = frozenset()) -> bool:
            rival = self.rival[name]
            if rival in finished:
                return True
            return rival in self.out and rival not in seen and stands(rival, seen | {name})

        return [name for name in self.out if not stands(name)]

    def reinstate(self, names: Collection[str]) -> None:
        """Take the candidates back into the field (their verdicts no longer stand): they finish their folds."""
        for name in names:
            del self.out[name], self.kept[name], self.rival[name]

    def pick(self, waiting: Sequence[tuple[str, int]]) -> int:
        """Which waiting fit a free worker should start, so that few fits are spent on candidates about to go.

        A fit the race needs (a fold before the next round, a protected candidate's, or any
        once racing is over) starts first, in the order given. When every waiting fit is a
        fold the next round may make useless, the best-placed candidate's comes first: the
        leader is never raced out, the laggards most likely are.

        Args:
            waiting: `(candidate, fold)` of each fit waiting to start, in schedule order.

        Returns:
            The position in `waiting` of the fit to start.
        """
        for k, (name, fold) in enumerate(waiting):
            if fold < self.next_round or self.next_round >= self.n_folds or name in self.rule.protected:
                return k

        def standing(k: int) -> tuple[int, float]:
            mine = self.scores.get(waiting[k][0], {})
            if not mine:
                return (1, 0.0)
            mean = sum(mine.values()) / len(mine)
            return (0, -mean if self.metric.greater_is_better else mean)

        return min(range(len(waiting)), key=standing)

    def _racing(self, m: int | None = None) -> list[str]:
        """The candidates in round `m` (default: the next): not out, not protected, no failed fold before it."""
        m = self.next_round if m is None else m
        return [
            n for n in self.scores
            if n not in self.out and n not in self.rule.protected and self.failed_at.get(n, m) >= m
        ]

    def _judge(self, name: str, field: Sequence[str], m: int) -> tuple[str, str]:
        """The reason `name` is raced out on folds `0..m-1` by the best rival in `field` and that rival, or ("", "")."""
        rivals = [n for n in field if n != name]
        if not rivals:
            return "", ""
        mean = {n: sum(self.scores[n][f] for f in range(m)) / m for n in field}
        rival = max(rivals, key=lambda n: self.metric.better(mean[n], mean[name]))
        if self.metric.better(mean[rival], mean[name]) <= 0:
            return "", ""
        r = self.rule
        theirs = [self.scores[rival][f] for f in range(m)]
        mine = [self.scores[name][f] for f in range(m)]
        tol, basis = self.metric.tolerance(mean[rival], r.tolerance, r.relative_tolerance)
        loss = loss_posterior(theirs, mine, r.n_train, r.n_test, tol, greater_is_better=self.metric.greater_is_better)
        # At least 1 - alpha, and never below alpha: a candidate the rule would call practically
        # as good (p_worse <= alpha) is never raced out, whatever alpha is configured.
        confidence = max(1.0 - r.alpha, r.alpha)
        if loss.p_worse < confidence or loss.scale == 0.0:
            # The same loss on every fold is no proof on a coarse metric (accuracy on a small
            # fold moves in steps): wait for a fold that differs.
            return "", ""
        return (
            f"{RACED_OUT_PREFIX} after {m} of {self.n_folds} folds: on the same folds it scored "
            f"{loss.expected_loss:.4f} {r.metric} worse than {rival}, and the chance that it loses more than "
            f"the tolerance ({basis}) is {loss.p_worse:.1%} (raced out at {confidence:.0%} or more)"
        ), rival
