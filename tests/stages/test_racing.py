"""Racing: a candidate that cannot be chosen stops early; one that could be chosen never does."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from pipeline.backends.local_pool import LocalPool
from pipeline.settings import EvaluationConfig
from stages.modeling import OK, RACED_OUT, compare_models, make_folds
from stages.racing import MIN_FOLDS, Race, RaceRule
from stages.selection import loss_posterior, select_model

N_FOLDS = 5


def _race(metric: str = "balanced_accuracy", names=("baseline", "linear", "svm", "mlp"), **rule) -> Race:
    return Race(RaceRule(metric, 0.05, n_train=400, n_test=100, **rule), list(names), N_FOLDS)


def _feed(race: Race, scores: dict[str, list[float]], folds: int = N_FOLDS) -> dict[str, int]:
    """Feed fold by fold, as the pool does; returns {raced-out name: folds its row keeps}."""
    for name in set(race.scores) - set(scores):  # a candidate the test does not race
        race.failed_at[name] = 0
    out = {}
    for fold in range(folds):
        for name, values in scores.items():
            if name in race.out:
                continue
            for gone in race.record(name, fold, values[fold]):
                out[gone] = race.kept[gone]
    return out


def test_a_candidate_clearly_worse_on_the_first_folds_is_raced_out_as_soon_as_it_may_be():
    race = _race()
    out = _feed(race, {
        "linear": [0.95, 0.96, 0.94, 0.95, 0.96],
        "svm": [0.70, 0.72, 0.69, 0.71, 0.70],
        "baseline": [0.33, 0.33, 0.33, 0.33, 0.33],
    })
    assert out == {"svm": MIN_FOLDS}
    reason = race.out["svm"]
    assert reason.startswith(f"raced out after {MIN_FOLDS} of {N_FOLDS} folds") and "worse than linear" in reason
    assert "0.005 balanced_accuracy" in reason  # the selection rule's tolerance, named


def test_a_candidate_within_the_tolerance_on_its_folds_so_far_is_never_raced_out():
    rng = np.random.default_rng(0)
    for _ in range(200):  # whatever the noise: a mean loss within the tolerance is never evidence against it
        top = 0.90 + rng.normal(0, 0.02, N_FOLDS)
        close = top - rng.uniform(0, 0.005, N_FOLDS)  # every fold within the 0.005 tolerance
        race = _race(names=("linear", "mlp"))
        assert _feed(race, {"linear": list(close), "mlp": list(top)}) == {}


def test_a_candidate_truly_within_the_tolerance_is_raced_out_at_most_alpha_of_the_time():
    # The test is the selection rule's: on noisy folds a candidate whose true loss is inside
    # the tolerance can look worse by chance; racing may stop it at most about alpha of the time,
    # and only when its folds so far showed a loss beyond the tolerance.
    rng = np.random.default_rng(0)
    wrong = 0
    for _ in range(400):
        top = 0.90 + rng.normal(0, 0.01, N_FOLDS)
        close = top - 0.002 + rng.normal(0, 0.004, N_FOLDS)
        race = _race(names=("linear", "mlp"))
        out = _feed(race, {"linear": list(close), "mlp": list(top)})
        if out:
            m = out["linear"]
            assert float(np.mean(top[:m] - close[:m])) > 0.005
            wrong += 1
    assert wrong / 400 <= 0.05


def test_an_equal_candidate_on_a_coarse_metric_is_not_raced_out_by_a_run_of_identical_folds():
    # accuracy on a small fold moves in steps: two folds in a row may differ by exactly the same amount
    race = _race()
    assert _feed(race, {"mlp": [1.0, 1.0, 1.0, 1.0, 1.0], "linear": [0.985, 0.985, 0.985, 1.0, 1.0]}) == {}


def test_nobody_is_raced_out_before_the_minimum_shared_folds():
    race = _race()
    out = _feed(race, {"linear": [0.99] * N_FOLDS, "svm": [0.1, 0.1] + [0.1] * 3}, folds=MIN_FOLDS - 1)
    assert out == {} and not race.out


def test_the_baseline_is_neither_raced_out_nor_a_rival():
    race = _race()
    out = _feed(race, {
        "baseline": [0.90, 0.91, 0.90, 0.92, 0.90],  # everything is worse than the dummy
        "linear": [0.50, 0.52, 0.49, 0.51, 0.50],
        "svm": [0.55, 0.54, 0.56, 0.55, 0.54],
    })
    assert "baseline" not in out
    assert "svm" not in out  # the best model stays to be chosen, however far behind the floor
    assert list(out) == ["linear"] and "worse than svm" in race.out["linear"]  # against svm, not the baseline


def test_a_round_waits_for_every_candidate_in_the_race_so_the_outcome_does_not_depend_on_timing():
    scores = {"linear": [0.95, 0.96, 0.94, 0.95, 0.96], "svm": [0.70, 0.72, 0.69, 0.71, 0.70], "mlp": [0.951, 0.955, 0.945, 0.95, 0.96]}
    race = _race(names=list(scores))
    for fold in range(N_FOLDS):  # svm and linear race ahead; mlp's folds come late
        assert race.record("svm", fold, scores["svm"][fold]) == {}
        assert race.record("linear", fold, scores["linear"][fold]) == {}
    for fold in range(MIN_FOLDS - 1):
        assert race.record("mlp", fold, scores["mlp"][fold]) == {}
    out = race.record("mlp", MIN_FOLDS - 1, scores["mlp"][MIN_FOLDS - 1])  # round MIN_FOLDS closes now
    assert list(out) == ["svm"] and race.kept == {"svm": MIN_FOLDS}  # judged on its first folds, not on all five


def test_a_candidate_never_fed_holds_no_round_once_it_fails():
    race = _race(names=("linear", "svm", "mlp"))
    for fold in range(MIN_FOLDS):
        race.record("linear", fold, 0.95 + 0.01 * fold)
        race.record("svm", fold, 0.70 - 0.01 * fold)
    assert race.record("mlp", 0, math.nan) == {"svm": race.out["svm"]}  # e.g. timed out: no round waits for it


def test_a_failed_fold_takes_a_candidate_out_of_the_race_without_racing_it_out():
    race = _race()
    out = _feed(race, {"linear": [0.99, 0.98, 0.99, 0.99, 0.98], "svm": [0.5, math.nan, 0.5, 0.5, 0.5]})
    assert out == {} and race.failed_at["svm"] == 1 and "svm" not in race.out


def test_a_metric_where_lower_is_better_races_on_a_share_of_the_rival_s_score():
    race = _race("rmse", names=("linear", "random_forest"))
    out = _feed(race, {"linear": [300.0, 310.0, 305.0, 298.0, 302.0], "random_forest": [150.0, 155.0, 149.0, 151.0, 150.0]})
    assert out == {"linear": MIN_FOLDS}
    assert "1% of the top one's" in race.out["linear"] and "worse than random_forest" in race.out["linear"]


def test_racing_needs_at_least_two_shared_folds():
    with pytest.raises(ValueError, match="at least 2"):
        _race(min_folds=1)


@pytest.fixture
def classification():
    X, y = make_classification(n_samples=400, n_features=8, n_informative=5, class_sep=2.0, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    return frame, pd.Series(y, name="y")


def _candidates():
    # the same "prepare" step, as crispml builds them: the fold-by-fold schedule racing needs
    return {
        "baseline": Pipeline([("prepare", StandardScaler()), ("model", DummyClassifier(strategy="prior"))]),
        "linear": Pipeline([("prepare", StandardScaler()), ("model", LogisticRegression(random_state=0))]),
        "coin": Pipeline([("prepare", StandardScaler()), ("model", DummyClassifier(strategy="uniform", random_state=0))]),
    }


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_compare_models_races_out_a_clearly_worse_candidate_which_is_then_never_chosen(classification, n_jobs):
    X, y = classification
    folds = make_folds(y, "binary", N_FOLDS, 0)
    race = Race(RaceRule("balanced_accuracy", 0.05, n_train=320, n_test=80), ["baseline", "linear", "coin"], N_FOLDS)
    board = compare_models(_candidates(), X, y, folds, "binary", "balanced_accuracy", LocalPool(n_jobs), race=race)
    rows = {r.name: r for r in board.rows}
    coin = rows["coin"]
    assert coin.status == RACED_OUT and coin.error.startswith("raced out after")
    assert MIN_FOLDS <= len(coin.fold_scores["balanced_accuracy"]) < N_FOLDS  # the folds so far, no more
    assert not math.isnan(coin.mean("balanced_accuracy"))
    assert rows["linear"].status == OK and len(rows["linear"].fold_scores["balanced_accuracy"]) == N_FOLDS
    assert rows["baseline"].status == OK and len(rows["baseline"].fold_scores["balanced_accuracy"]) == N_FOLDS
    selection = select_model(board, EvaluationConfig(selection="best_mean"), 320, 80)
    assert selection.chosen == "linear" and selection.comparison("coin") is None
    assert [r.name for r in board.rows][-1] == "coin"  # ranked after every finished candidate


def test_without_a_race_every_candidate_runs_every_fold(classification):
    X, y = classification
    folds = make_folds(y, "binary", N_FOLDS, 0)
    board = compare_models(_candidates(), X, y, folds, "binary", "balanced_accuracy")
    assert all(r.status == OK and len(r.fold_scores["balanced_accuracy"]) == N_FOLDS for r in board.rows)


def test_a_free_worker_starts_the_fits_the_race_needs_first_then_the_leaders():
    race = _race(names=("baseline", "linear", "svm", "mlp"))
    for fold in range(MIN_FOLDS - 1):
        for name, score in (("linear", 0.80), ("svm", 0.70), ("mlp", 0.95), ("baseline", 0.3)):
            race.record(name, fold, score + 0.001 * fold)
    waiting = [("svm", MIN_FOLDS), ("linear", MIN_FOLDS - 1), ("mlp", MIN_FOLDS)]
    assert race.pick(waiting) == 1  # linear's fold is needed to close the next round
    at_risk = [("svm", MIN_FOLDS), ("linear", MIN_FOLDS), ("mlp", MIN_FOLDS), ("mlp", MIN_FOLDS + 1)]
    assert race.pick(at_risk) == 2  # none is needed: the leader's next fold, never wasted
    assert race.pick([("svm", MIN_FOLDS), ("baseline", MIN_FOLDS)]) == 1  # the baseline is never raced


def test_a_failure_on_a_later_fold_does_not_change_the_rounds_whenever_it_comes_in():
    scores = {"gb": [0.95, 0.96, 0.95, 0.96, math.nan], "linear": [0.70, 0.72, 0.71, 0.70, 0.71], "svm": [0.94, 0.95, 0.94, 0.95, 0.95]}
    in_order = _race(names=list(scores))
    _feed(in_order, scores)
    early = _race(names=list(scores))
    early.record("gb", 4, math.nan)  # gb's last fold fails before anything else is in (many workers)
    _feed(early, {k: v if k != "gb" else v[:4] + [0.0] for k, v in scores.items()}, folds=4)
    assert in_order.out.keys() == early.out.keys() == {"linear"}
    assert in_order.kept == early.kept and in_order.rival == early.rival


def test_a_verdict_stands_only_while_its_rival_finishes():
    race = _race(names=("gb", "linear", "svm"))
    race.out = {"linear": "raced out ...", "svm": "raced out ..."}
    race.rival = {"linear": "svm", "svm": "gb"}
    assert race.orphans({"gb"}) == []  # linear lost to svm, which lost to gb, which finished
    assert race.orphans(set()) == ["linear", "svm"]  # gb failed later: both must finish their folds


def test_an_alpha_above_one_half_never_races_out_what_the_rule_would_call_equivalent():
    # With alpha = 0.7 the rule calls a candidate practically as good up to a 70% chance of losing
    # more than the tolerance. Here that chance is 50-65% on every round: above 1 - alpha (30%),
    # so a threshold of 1 - alpha alone would race it out, but within what the rule accepts.
    a = [0.90, 0.91, 0.90, 0.92, 0.90]
    b = [x - d for x, d in zip(a, [0.004, 0.007, 0.004, 0.007, 0.006], strict=True)]
    rule = RaceRule("balanced_accuracy", 0.7, n_train=400, n_test=100)
    for m in range(MIN_FOLDS, N_FOLDS):
        p = loss_posterior(a[:m], b[:m], 400, 100, 0.005).p_worse
        assert 0.3 <= p <= 0.7
    assert _feed(Race(rule, ["a", "b"], N_FOLDS), {"a": a, "b": b}) == {}


class _FailsWithoutRow:
    """A strong model whose fit fails when row `row` is not among its training rows: a rival that
    does not finish, on the one fold whose test part holds that row."""

    def __init__(self, row: int = -1) -> None:
        self.row = row

    def get_params(self, deep=True):
        return {"row": self.row}

    def set_params(self, **params):
        self.row = params.get("row", self.row)
        return self

    def fit(self, X, y):
        if self.row not in set(X["marker"]):
            raise RuntimeError("fails on this fold on purpose")
        self.model_ = LogisticRegression(random_state=0).fit(X.drop(columns="marker"), y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X.drop(columns="marker"))

    def predict_proba(self, X):
        return self.model_.predict_proba(X.drop(columns="marker"))


def test_a_candidate_raced_out_by_a_rival_that_later_fails_finishes_its_folds_and_can_be_chosen(classification):
    X, y = classification
    X = X.assign(marker=np.arange(len(X)))
    folds = make_folds(y, "binary", N_FOLDS, 0)
    same = FunctionTransformer()  # one shared "prepare" step that keeps the marker column
    candidates = {
        "baseline": Pipeline([("prepare", same), ("model", DummyClassifier(strategy="prior"))]),
        "strong": Pipeline([("prepare", same), ("model", _FailsWithoutRow(int(folds[-1][1][0])))]),  # fails on the last fold
        "coin": Pipeline([("prepare", same), ("model", DummyClassifier(strategy="uniform", random_state=0))]),
    }
    race = Race(RaceRule("balanced_accuracy", 0.05, n_train=320, n_test=80), list(candidates), N_FOLDS)
    board = compare_models(candidates, X, y, folds, "binary", "balanced_accuracy", race=race)
    rows = {r.name: r for r in board.rows}
    assert rows["strong"].status == "failed" and "on purpose" in rows["strong"].error
    assert rows["coin"].status == OK and len(rows["coin"].fold_scores["balanced_accuracy"]) == N_FOLDS  # revived
    assert not race.out  # its verdict, which rested on strong, was withdrawn
    assert select_model(board, EvaluationConfig(selection="simplest_equivalent"), 320, 80).chosen == "coin"  # as with --no-race


def test_racing_is_off_under_a_time_budget_whose_schedule_runs_candidate_by_candidate(classification):
    import time

    X, y = classification
    folds = make_folds(y, "binary", N_FOLDS, 0)
    race = Race(RaceRule("balanced_accuracy", 0.05, n_train=320, n_test=80), list(_candidates()), N_FOLDS)
    board = compare_models(_candidates(), X, y, folds, "binary", "balanced_accuracy", LocalPool(2),
                           deadline=time.monotonic() + 600, race=race)
    assert all(r.status == OK and len(r.fold_scores["balanced_accuracy"]) == N_FOLDS for r in board.rows)


def test_the_race_follows_the_selection_rules_settings():
    settings = EvaluationConfig(alpha=0.1, tolerance=0.02, relative_tolerance=0.03)
    rule = RaceRule.following(settings, "r2", 400.0, 100.0)
    assert (rule.metric, rule.alpha, rule.n_train, rule.n_test) == ("r2", 0.1, 400.0, 100.0)
    assert (rule.tolerance, rule.relative_tolerance) == (0.02, 0.03)
