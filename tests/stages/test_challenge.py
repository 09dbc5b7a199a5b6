"""Champion and challenger: fingerprints, fair rows, the record, and the row-by-row comparison."""

import numpy as np
import pandas as pd
import pytest

from pipeline.settings import EvaluationConfig
from stages import challenge
from stages.challenge import ChampionRecord, Predictions, compare, fair_rows, row_fingerprints
from stages.metrics import METRICS

CLASSES = ("a", "b")


def test_fingerprints_match_an_integer_column_read_as_floats_and_tell_rows_apart():
    ints = pd.DataFrame({"x": [1, 2, 1], "c": ["p", "q", "p"], "y": ["a", "b", "a"]})
    floats = pd.DataFrame({"y": ["a", "b", "a"], "x": [1.0, 2.0, 1.0], "c": ["p", "q", "p"]})  # another order, a gap's type
    columns = challenge.fingerprint_columns(["x", "c"], "y")
    assert columns == ("c", "x", "y")
    a, b = row_fingerprints(ints, columns), row_fingerprints(floats, columns)
    assert a.dtype == np.uint64 and (a == b).all()
    assert a[0] == a[2] and len(set(a.tolist())) == 2  # equal rows, equal prints; different rows differ
    changed = ints.assign(x=[1, 2, 4])  # one value changed: another print
    assert row_fingerprints(changed, columns)[2] != a[2]


def test_fair_rows_score_unseen_rows_live_take_old_holdout_rows_from_the_record_and_leave_out_the_rest():
    record = ChampionRecord(
        columns=("x",),
        trained=np.array([1, 2, 3, 4], dtype=np.uint64),  # the champion was refitted on all its rows
        holdout=np.array([3, 4], dtype=np.uint64),  # of which these were its holdout
        predictions=np.array(["a", "b"]),
        proba=None,
        classes=CLASSES,
    )
    new = np.array([9, 4, 1, 8, 3], dtype=np.uint64)
    sources = fair_rows(record, new)
    assert sources.live.tolist() == [0, 3]  # never seen
    assert sources.recorded.tolist() == [1, 4] and sources.record_index.tolist() == [1, 0]
    assert sources.left_out == 1  # row 2 (print 1) was learnt from and has no unbiased prediction


def test_a_record_round_trips_without_pickle_and_garbage_is_refused():
    record = ChampionRecord(
        ("x", "y"), np.array([5, 7], dtype=np.uint64), np.array([7], dtype=np.uint64), np.array(["b"]), np.array([[0.2, 0.8]]), CLASSES
    )
    back = ChampionRecord.from_bytes(record.to_bytes())
    assert back.columns == ("x", "y") and back.classes == CLASSES
    assert back.trained.tolist() == [5, 7] and back.predictions.tolist() == ["b"] and back.proba.tolist() == [[0.2, 0.8]]
    regression = ChampionRecord(("x",), np.array([1], dtype=np.uint64), np.array([1], dtype=np.uint64), np.array([2.5]), None, None)
    assert ChampionRecord.from_bytes(regression.to_bytes()).predictions.tolist() == [2.5]
    with pytest.raises(ValueError, match="not a champion record"):
        ChampionRecord.from_bytes(b"not an npz file")


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array(CLASSES), n)


def _flip(y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = y.copy()
    out[rows] = np.where(y[rows] == "a", "b", "a")
    return out


def _compare(metric: str, y, new, champ, **kw):
    return compare(metric, y, new, champ, EvaluationConfig(), champion_version="3", **kw)


def test_the_same_predictions_are_practically_as_good_and_take_champion():
    rng = np.random.default_rng(0)
    y = _labels(rng, 200)
    pred = _flip(y, np.arange(20))
    result = _compare("accuracy", y, Predictions(pred, None, CLASSES), Predictions(pred, None, CLASSES))
    assert result.promoted and result.outcome == challenge.PROMOTED and result.alias == "champion"
    assert result.p_worse == 0.0 and result.champion_score == result.new_score == pytest.approx(0.9)
    assert "practically as good as champion version 3" in result.reason


def test_a_clearly_worse_model_is_a_challenger_and_says_by_how_much():
    rng = np.random.default_rng(1)
    y = _labels(rng, 300)
    champ = _flip(y, np.arange(15))  # 95% right
    new = _flip(y, np.arange(0, 300, 4))  # 75% right
    result = _compare("accuracy", y, Predictions(new, None, CLASSES), Predictions(champ, None, CLASSES), rows_left_out=7)
    assert not result.promoted and result.outcome == challenge.CHALLENGER and result.alias == "challenger"
    assert result.p_worse > 0.95 and result.expected_loss == pytest.approx(0.25 - 0.05, abs=0.02)
    assert result.rows == 300 and result.rows_left_out == 7
    assert "may be worse than champion version 3" in result.reason and "0.7500 against 0.9500" in result.reason


def test_a_clearly_better_model_takes_champion():
    rng = np.random.default_rng(2)
    y = _labels(rng, 300)
    result = _compare(
        "balanced_accuracy", y, Predictions(_flip(y, np.arange(10)), None, CLASSES), Predictions(_flip(y, np.arange(90)), None, CLASSES)
    )
    assert result.promoted and result.p_worse < 1e-6 and result.new_score > result.champion_score


def test_a_difference_hidden_in_the_noise_of_few_rows_keeps_the_champion():
    # Equal scores, but 3 rows each way swapped on 40 rows: no evidence the new model is practically as good.
    y = np.array(["a", "b"] * 20)
    champ = _flip(y, np.array([0, 1, 2]))
    new = _flip(y, np.array([3, 4, 5]))
    result = _compare("accuracy", y, Predictions(new, None, CLASSES), Predictions(champ, None, CLASSES))
    assert result.new_score == result.champion_score and not result.promoted and result.p_worse > 0.05


def test_too_few_fair_rows_keep_the_champion_and_say_why():
    result = _compare("accuracy", np.array(["a"]), Predictions(np.array(["a"]), None, CLASSES), Predictions(np.array(["a"]), None, CLASSES), rows_left_out=60)
    assert not result.promoted and "only 1 holdout row(s) are new to the champion (60 it learnt from" in result.reason


def test_regression_compares_squared_errors_against_a_relative_rmse_tolerance():
    rng = np.random.default_rng(3)
    y = rng.normal(100, 10, 500)
    champ = y + rng.normal(0, 5, 500)
    slightly = champ + rng.normal(0, 0.01, 500)  # practically the same model
    worse = y + rng.normal(0, 8, 500)
    same = _compare("rmse", y, Predictions(slightly), Predictions(champ))
    assert same.promoted and same.new_score == pytest.approx(same.champion_score, rel=1e-3)
    assert same.tolerance == pytest.approx(same.champion_score * 0.01)  # in rmse, as the reason shows it
    assert same.loss_tolerance == pytest.approx((same.champion_score * 1.01) ** 2 - same.champion_score**2)
    bad = _compare("rmse", y, Predictions(worse), Predictions(champ))
    assert not bad.promoted and bad.new_score > bad.champion_score * 1.3


def test_probabilities_are_aligned_by_class_name_and_a_class_the_champion_lacks_counts_zero():
    y = np.array(["a", "b", "c"] * 30)
    classes = ("a", "b", "c")
    proba = np.tile(np.eye(3), (30, 1)) * 0.9 + 0.1 / 3
    champ_proba = proba[:, [2, 0, 1]]  # the same probabilities, columns in another order
    same = _compare("log_loss", y, Predictions(y, proba, classes), Predictions(y, champ_proba, ("c", "a", "b")))
    assert same.promoted and same.new_score == pytest.approx(same.champion_score)
    two_classes = proba[:, :2] / proba[:, :2].sum(axis=1, keepdims=True)
    two = _compare("roc_auc", y, Predictions(y, proba, classes), Predictions(y, two_classes, ("a", "b")))
    assert two.champion_score < two.new_score  # class c scored 0 by a champion that does not know it
    extra = np.hstack([proba * 0.5, np.full((90, 1), 0.5)])  # the champion knows a class "d" this run does not
    more = _compare("log_loss", y, Predictions(y, proba, classes), Predictions(y, extra, ("a", "b", "c", "d")))
    assert more.champion_score == pytest.approx(more.new_score)  # "d"'s share goes back to the classes this run knows


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metrics_row_losses_average_to_its_loss(name):
    rng = np.random.default_rng(4)
    m = METRICS[name]
    if "regression" in m.tasks:
        y = rng.normal(size=120)
        pred, proba, classes = y + rng.normal(size=120), None, None
    else:
        classes = np.array(["a", "b", "c"])
        y = rng.choice(classes, 120)
        proba = rng.dirichlet([1, 1, 1], 120)
        pred = classes[proba.argmax(1)]
    loss, weights = m.row_loss(y, pred, proba, classes)
    mean = np.average(loss, weights=weights)
    score = m.score(y, pred, proba, classes)
    expected = {"rmse": score**2, "mae": score, "log_loss": score}.get(name, 1.0 - score)
    if name == "f1_macro":  # no split into rows: the class-balanced error stands in for it
        expected = 1.0 - METRICS["balanced_accuracy"].score(y, pred, proba, classes)
    assert mean == pytest.approx(expected)


def test_fingerprints_read_cells_as_the_data_step_does_whatever_type_the_column_got():
    clean = pd.DataFrame({"x": [5.0, np.nan, 7.0], "y": ["a", "b", "a"]})
    texty = pd.DataFrame({"x": ["5", "?", " 7 "], "y": [" a", "b", "a "]})  # one marker made the column text
    columns = ("x", "y")
    assert (row_fingerprints(clean, columns) == row_fingerprints(texty, columns)).all()
    other = pd.DataFrame({"x": ["5", "?", "seven"], "y": ["a", "b", "a"]})
    assert row_fingerprints(other, columns)[2] != row_fingerprints(clean, columns)[2]


def test_labels_of_any_type_become_one_text():
    assert challenge.label_text([1, 1.0, np.int64(1), np.float32(2.0), True, np.bool_(False), "x", 1.5]).tolist() == [
        "1", "1", "1", "2", "True", "False", "x", "1.5"
    ]
    # A target read as floats (a gap) against a champion trained on integers: the same labels.
    y = np.array([0.0, 1.0] * 30)
    champ = Predictions(np.array([0, 1] * 30), np.tile([[0.9, 0.1], [0.2, 0.8]], (30, 1)), (0, 1))
    new = Predictions(y, np.tile([[0.9, 0.1], [0.2, 0.8]], (30, 1)), (0.0, 1.0))
    result = _compare("roc_auc", y, new, champ)
    assert result.champion_score == result.new_score == 1.0 and result.promoted


def test_a_champion_without_probabilities_is_replaced_not_kept_forever():
    y = np.array(["a", "b"] * 20)
    result = _compare("roc_auc", y, Predictions(y, np.tile([[0.8, 0.2], [0.3, 0.7]], (20, 1)), CLASSES), Predictions(y, None, CLASSES))
    assert result.outcome == challenge.NOT_COMPARED and result.promoted and "gives no class probabilities" in result.reason


def test_rows_of_one_class_cannot_show_anything_and_raise_nothing():
    y = np.array(["a"] * 30)
    proba = np.tile([[0.7, 0.3]], (30, 1))
    result = _compare("roc_auc", y, Predictions(y, proba, CLASSES), Predictions(y, proba, CLASSES))
    assert result.outcome == challenge.CHALLENGER and "cannot be scored by roc_auc" in result.reason


def test_a_damaged_record_is_refused_as_such():
    good = ChampionRecord(("x",), np.array([1], dtype=np.uint64), np.array([1, 2], dtype=np.uint64), np.array(["a", "b"]), None, CLASSES)
    content = good.to_bytes()
    with pytest.raises(ValueError, match="not a champion record"):
        ChampionRecord.from_bytes(content[: len(content) // 2])  # truncated
    short = ChampionRecord(("x",), good.trained, good.holdout, np.array(["a"]), None, CLASSES)
    with pytest.raises(ValueError, match="do not fit together"):
        ChampionRecord.from_bytes(short.to_bytes())


@pytest.mark.parametrize("name", ["roc_auc", "balanced_accuracy", "accuracy", "log_loss"])
def test_the_standard_error_of_the_paired_difference_matches_its_spread(name):
    # Two models scored on many independent holdouts: the spread of their score difference
    # is what the comparison's standard error must estimate (ROC AUC needs DeLong's factor 2).
    m = METRICS[name]
    rng = np.random.default_rng(5)
    classes = np.array(["a", "b", "c"])
    diffs, ses = [], []
    for _ in range(200):
        y = rng.choice(3, 300, p=[0.5, 0.3, 0.2])

        def proba(noise):
            z = np.eye(3)[y] * 1.5 + rng.normal(0, noise, (300, 3))
            return np.exp(z) / np.exp(z).sum(1, keepdims=True)

        p1, p2 = proba(1.0), proba(1.2)
        truth = classes[y]
        l1, w = m.row_loss(truth, classes[p1.argmax(1)], p1, classes)
        l2, _ = m.row_loss(truth, classes[p2.argmax(1)], p2, classes)
        mean, se = challenge.paired_difference(l2 - l1, w, m.se_factor)
        diffs.append(mean)
        ses.append(se)
    assert 0.8 < np.mean(ses) / np.std(diffs) < 1.25


def test_a_record_fingerprinted_another_way_is_not_matched(monkeypatch):
    record = ChampionRecord(("x",), np.array([1], dtype=np.uint64), np.array([1], dtype=np.uint64), np.array(["a"]), None, CLASSES)
    monkeypatch.setattr(challenge, "FINGERPRINT_SCHEME", 2)
    content = record.to_bytes()
    monkeypatch.setattr(challenge, "FINGERPRINT_SCHEME", 1)
    with pytest.raises(ValueError, match="fingerprinted by scheme 2, this crispml's is 1"):
        ChampionRecord.from_bytes(content)


def test_fingerprints_tell_true_from_one_and_read_bools_and_dates_as_a_csv_writes_them():
    mixed = pd.DataFrame({"x": pd.Series([True, 1, 1], dtype=object)})
    assert row_fingerprints(mixed, ["x"])[1] == row_fingerprints(mixed.iloc[[1]], ["x"])[0]  # order does not matter
    assert row_fingerprints(mixed, ["x"])[0] != row_fingerprints(mixed, ["x"])[1]  # True is not 1
    bools = pd.DataFrame({"b": [True, False, True]})
    gappy = pd.DataFrame({"b": pd.Series([True, False, None], dtype=object)})  # one gap: read as text
    assert (row_fingerprints(bools, ["b"])[:2] == row_fingerprints(gappy, ["b"])[:2]).all()
    dates = pd.DataFrame({"d": pd.to_datetime(["2020-01-01", "2020-02-03"])})  # as Parquet keeps them
    text = pd.DataFrame({"d": ["2020-01-01", "2020-02-03"]})  # as a CSV holds them
    assert (row_fingerprints(dates, ["d"]) == row_fingerprints(text, ["d"])).all()
    empty = pd.DataFrame({"x": pd.Series([], dtype=object)})
    assert len(row_fingerprints(empty, ["x"])) == 0


def test_a_classifiers_record_without_probabilities_stays_a_classifiers():
    record = ChampionRecord(("x",), np.array([1], dtype=np.uint64), np.array([1], dtype=np.uint64), np.array(["a"]), None, CLASSES)
    back = ChampionRecord.from_bytes(record.to_bytes())
    assert back.classes == CLASSES and back.proba is None


def test_no_rows_to_compare_keep_the_champion_whatever_the_metric():
    empty = Predictions(np.array([]), None, CLASSES)
    result = _compare("roc_auc", np.array([]), Predictions(np.array([]), np.zeros((0, 2)), CLASSES), empty, rows_left_out=40)
    assert result.outcome == challenge.CHALLENGER and "only 0 holdout row(s)" in result.reason
