"""Racing: a candidate that cannot be chosen stops early; one that could be chosen never does."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from stages.modeling import OK, RACED_OUT, compare_models, make_folds
from stages.racing import MIN_FOLDS, Race, RaceRule
from stages.selection import select_model

N_FOLDS = 5


def _race(metric: str = "balanced_accuracy", names=("baseline", "linear", "svm", "mlp"), **rule) -> Race:
    return Race(RaceRule(metric, 0.05, n_train=400, n_test=100, **rule), list(names), N_FOLDS)


def _feed(race: Race, scores: dict[str, list[float]], folds: int = N_FOLDS) -> dict[str, int]:
    """Feed fold by fold, as the pool does; returns {raced-out name: folds its row keeps}."""
    for name in set(race.scores) - set(scores):  # a candidate the test does not race
        race.failed.add(name)
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


def test_a_candidate_within_the_tolerance_is_never_raced_out():
    rng = np.random.default_rng(0)
    for _ in range(200):  # noisy folds whose true loss is inside the tolerance
        top = 0.90 + rng.normal(0, 0.01, N_FOLDS)
        close = top - 0.002 + rng.normal(0, 0.004, N_FOLDS)
        race = _race()
        assert _feed(race, {"linear": list(close), "mlp": list(top)}) == {}


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
    assert out == {} and "svm" in race.failed and "svm" not in race.out


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
    return {
        "baseline": Pipeline([("model", DummyClassifier(strategy="prior"))]),
        "linear": Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(random_state=0))]),
        "coin": Pipeline([("model", DummyClassifier(strategy="uniform", random_state=0))]),  # a model that guesses
    }


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_compare_models_races_out_a_clearly_worse_candidate_which_is_then_never_chosen(classification, n_jobs):
    X, y = classification
    folds = make_folds(y, "binary", N_FOLDS, 0)
    race = Race(RaceRule("balanced_accuracy", 0.05, n_train=320, n_test=80), ["baseline", "linear", "coin"], N_FOLDS)
    board = compare_models(_candidates(), X, y, folds, "binary", "balanced_accuracy", n_jobs=n_jobs, race=race)
    rows = {r.name: r for r in board.rows}
    coin = rows["coin"]
    assert coin.status == RACED_OUT and coin.error.startswith("raced out after")
    assert MIN_FOLDS <= len(coin.fold_scores["balanced_accuracy"]) < N_FOLDS  # the folds so far, no more
    assert not math.isnan(coin.mean("balanced_accuracy"))
    assert rows["linear"].status == OK and len(rows["linear"].fold_scores["balanced_accuracy"]) == N_FOLDS
    assert rows["baseline"].status == OK and len(rows["baseline"].fold_scores["balanced_accuracy"]) == N_FOLDS
    selection = select_model(board, "best_mean", 0.05, 320, 80)
    assert selection.chosen == "linear" and selection.comparison("coin") is None
    assert [r.name for r in board.rows][-1] == "coin"  # ranked after every finished candidate


def test_without_a_race_every_candidate_runs_every_fold(classification):
    X, y = classification
    folds = make_folds(y, "binary", N_FOLDS, 0)
    board = compare_models(_candidates(), X, y, folds, "binary", "balanced_accuracy", n_jobs=1)
    assert all(r.status == OK and len(r.fold_scores["balanced_accuracy"]) == N_FOLDS for r in board.rows)
