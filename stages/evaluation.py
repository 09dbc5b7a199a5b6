"""CRISP-DM phase 5, evaluation: is the model really better, and does it meet the business goal?

- `corrected_ttest` compares two candidates' paired per-fold scores with the corrected
  resampled t-test of Nadeau and Bengio (2003), which allows for the overlap of CV
  training sets that makes a plain paired t-test far too confident.
- `select_model` applies the selection rule: `simplest_within_noise` (default) takes the
  simplest candidate not significantly worse than the top one, like the one-standard-error
  rule; `best_mean` takes the top one.
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

from stages.metrics import METRICS, Metric, metrics_for, score_all
from stages.modeling import OK, CandidateResult, Leaderboard, predict_with_proba
from stages.modeling import complexity as complexity_of
from stages.preparation import Split
from stages.tuning import default_name, is_tuned
from stages.understanding import CLASSIFICATION

SIMPLEST_WITHIN_NOISE = "simplest_within_noise"
BEST_MEAN = "best_mean"
SELECTION_RULES = (SIMPLEST_WITHIN_NOISE, BEST_MEAN)
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
    rows = importance_rows(candidate, len(split.y_train), split.X_test.shape[1])
    importance = permutation_importances(
        result.fitted, split.X_test, split.y_test, metric, result.classes, seed, max_rows=rows
    )
    return result, importance


IMPORTANCE_SECONDS = 2.0
"""About how long permutation importance may spend predicting, judged by the candidate's CV predict times."""
IMPORTANCE_ROWS = (100, 1000)
"""Fewest and most holdout rows permutation importance shuffles."""


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


def corrected_ttest(a: Sequence[float], b: Sequence[float], n_train: float, n_test: float) -> PairedTest:
    """The corrected resampled t-test (Nadeau and Bengio, 2003) on paired per-fold scores.

    Folds of one cross-validation share most of their training rows, so the per-fold
    differences are correlated and a plain paired t-test is far too confident. The
    correction inflates the variance of the mean difference from `var/k` to
    `(1/k + n_test/n_train) * var`: t = mean(d) / sqrt((1/k + n_test/n_train) * var(d)),
    with k - 1 degrees of freedom.

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
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two equally long lists of at least 2 paired fold scores, got {len(x)} and {len(y)}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("fold scores hold NaN; a paired test needs a score on every fold")
    d = x - y
    k = len(d)
    mean = float(d.mean())
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):  # zero variance: no noise to test against
        same = abs(mean) <= 1e-12
        return PairedTest(mean_diff=mean, t=0.0 if same else math.copysign(math.inf, mean), df=k - 1, p_value=1.0 if same else 0.0)
    variance = float(d.var(ddof=1)) * (1.0 / k + n_test / n_train)
    t = mean / math.sqrt(variance)
    return PairedTest(mean_diff=mean, t=t, df=k - 1, p_value=float(2.0 * stats.t.sf(abs(t), k - 1)))


@dataclass(frozen=True)
class Comparison:
    """One candidate against the top of the leaderboard.

    Attributes:
        name: The candidate.
        mean_diff: Its mean score minus the top one's, in the metric's units (0 for the top).
        p_value: Two-sided p-value of the corrected resampled t-test (1 for the top).
        within_noise: Not significantly different from the top one (p >= alpha).
    """

    name: str
    mean_diff: float
    p_value: float
    within_noise: bool


@dataclass(frozen=True)
class Selection:
    """Which candidate was chosen, by which rule, and why.

    Attributes:
        chosen: The chosen candidate's name.
        top: The candidate with the best mean score.
        rule: `simplest_within_noise` or `best_mean`.
        alpha: The significance level.
        metric: The primary metric.
        reason: One sentence a person can check against the leaderboard.
        comparisons: Every candidate that did not fail, in leaderboard order.
    """

    chosen: str
    top: str
    rule: str
    alpha: float
    metric: str
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
) -> Selection:
    """Choose the model to evaluate and deploy from the leaderboard.

    Every candidate that did not fail is compared with the top one (best mean score) on
    its paired fold scores by `corrected_ttest`. Then:

    - `best_mean`: the top one.
    - `simplest_within_noise`: among the candidates not significantly worse than the top
      one (p >= alpha), the simplest by `complexity`, ties broken by measured predict time.

    The `baseline` is the floor, not a model to ship: it is chosen only when it is the
    only candidate that did not fail (and then the gate's margin over the baseline fails).

    Args:
        board: The leaderboard, best first.
        rule: `simplest_within_noise` or `best_mean`.
        alpha: The significance level.
        n_train: Training rows per fold (mean), for the test's correction.
        n_test: Test rows per fold (mean).
        complexity: `{name: rank}`, simplest lowest; default: `stages.modeling.complexity`, each
            model's `stages.modeling.MODELS` entry, a `:tuned` variant just above its default
            (unknown names rank last).

    Returns:
        The selection.

    Raises:
        ValueError: An unknown rule, or no candidate that did not fail.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule '{rule}'; use {' or '.join(SELECTION_RULES)}")
    m = board.metric
    ok = [r for r in board.rows if r.status == OK and not math.isnan(r.mean(m))]
    if not ok:
        raise ValueError("no candidate finished cross-validation; there is nothing to choose from")
    top = ok[0]
    comparisons = []
    for r in ok:
        if r is top:
            comparisons.append(Comparison(r.name, 0.0, 1.0, True))
            continue
        test = corrected_ttest(r.fold_scores[m], top.fold_scores[m], n_train, n_test)
        comparisons.append(Comparison(r.name, test.mean_diff, test.p_value, test.p_value >= alpha))
    by_name = {c.name: c for c in comparisons}
    pool = [r for r in ok if r.name != BASELINE] or ok
    ranks = complexity if complexity is not None else {r.name: complexity_of(r.name) for r in ok}
    noise = [r for r in pool if by_name[r.name].within_noise]
    if rule == BEST_MEAN or not noise:
        chosen = pool[0]
    else:
        chosen = min(noise, key=lambda r: (ranks.get(r.name, math.inf), _or_inf(r.predict_seconds)))
    reason = _reason(rule, alpha, m, top, chosen, pool, noise, by_name, len(top.fold_scores[m]))
    return Selection(
        chosen=chosen.name, top=top.name, rule=rule, alpha=alpha, metric=m, reason=reason, comparisons=tuple(comparisons)
    )


def _or_inf(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _reason(
    rule: str,
    alpha: float,
    metric: str,
    top: CandidateResult,
    chosen: CandidateResult,
    pool: list[CandidateResult],
    noise: list[CandidateResult],
    by_name: Mapping[str, Comparison],
    k: int,
) -> str:
    test = f"corrected resampled t-test on {k} folds, alpha {alpha:g}"
    if chosen.name == BASELINE:
        return f"{rule}: every other candidate failed, so only the baseline is left"
    floor = f"; the baseline ({BASELINE}) is the top by mean but only the floor, never chosen" if top.name == BASELINE else ""
    if rule == BEST_MEAN:
        return f"best_mean: {chosen.name} has the best mean {metric} ({chosen.mean(metric):.4f}){floor}"
    if not noise:
        return (
            f"simplest_within_noise: no model is within noise of the top one, {top.name} ({test}), "
            f"so the best by mean, {chosen.name}, is chosen{floor}"
        )
    names = ", ".join(r.name for r in noise)
    if chosen is top and len(noise) == 1:
        return (
            f"simplest_within_noise: {top.name} has the best mean {metric} ({top.mean(metric):.4f}) and every other "
            f"candidate is significantly worse ({test})"
        )
    if chosen is top:
        return (
            f"simplest_within_noise: {top.name} has the best mean {metric} and is also the simplest of the "
            f"candidates within noise of it ({names}; {test})"
        )
    c = by_name[chosen.name]
    return (
        f"simplest_within_noise: {chosen.name} is the simplest of the candidates not significantly worse than the top "
        f"one, {top.name} (difference {c.mean_diff:+.4f} {metric}, p = {c.p_value:.3f}; {test}); within noise: {names}{floor}"
    )


def annotated_leaderboard(board: Leaderboard, selection: Selection) -> pd.DataFrame:
    """The leaderboard table with each candidate's difference from the top one, its p-value and the chosen row.

    Args:
        board: The leaderboard.
        selection: The selection made from it.

    Returns:
        `board.to_frame()` with `chosen`, `diff_vs_top`, `p_value` and `within_noise`
        columns after `status` (NaN and False for failed candidates). When the board holds
        tuned variants (`<name>:tuned`, see `stages.tuning`), then also `tuned_vs_default`:
        a tuned row's mean score minus its default's, signed so that positive means tuning
        helped whatever the metric's direction (NaN on other rows, or when either failed),
        and `tuned_params`: the setting its search chose on each fold, folds separated by `|`.
    """
    frame = board.to_frame()
    found = [selection.comparison(name) for name in frame["model"]]
    at = list(frame.columns).index("status") + 1
    frame.insert(at, "chosen", [name == selection.chosen for name in frame["model"]])
    frame.insert(at + 1, "diff_vs_top", [c.mean_diff if c else math.nan for c in found])
    frame.insert(at + 2, "p_value", [c.p_value if c else math.nan for c in found])
    frame.insert(at + 3, "within_noise", [bool(c and c.within_noise) for c in found])
    if any(is_tuned(name) for name in frame["model"]):
        frame.insert(at + 4, "tuned_vs_default", [_tuned_gain(board, name) for name in frame["model"]])
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
    """

    metric: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

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
) -> Importance:
    """How much the holdout score drops when each input column is shuffled.

    The raw input columns are shuffled (not the one-hot columns the preprocessor makes),
    so each importance belongs to a column a person knows.

    Args:
        model: A pipeline fitted on the training part only.
        X: Holdout features.
        y: Holdout target.
        metric: The primary metric.
        classes: Class labels, or None for regression.
        seed: Random seed for the shuffles and the row sample.
        n_repeats: Shuffles per column.
        max_rows: At most this many holdout rows (sampled) to keep it cheap.

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

    result = permutation_importance(model, X, y, scoring=scorer, n_repeats=n_repeats, random_state=seed, n_jobs=1)
    order = np.argsort(-result.importances_mean, kind="stable")
    return Importance(
        metric=metric,
        features=tuple(str(X.columns[i]) for i in order),
        mean=tuple(float(result.importances_mean[i]) for i in order),
        std=tuple(float(result.importances_std[i]) for i in order),
    )


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
