"""Selection: the corrected t-test, the loss posterior, the rules that choose the model, and the annotated leaderboard."""

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.settings import EvaluationConfig
from stages.metrics import METRICS
from stages.modeling import FAILED, OK, CandidateResult, Leaderboard, rank
from stages.selection import (
    BEST_MEAN,
    SIMPLEST_EQUIVALENT,
    SIMPLEST_WITHIN_NOISE,
    annotated_leaderboard,
    corrected_ttest,
    loss_posterior,
    select_model,
)


def _t4_two_sided_p(t):
    """Two-sided p-value of Student's t with 4 degrees of freedom, from its closed-form CDF."""
    u = t / math.sqrt(1 + t * t / 4)
    cdf = 0.5 + 3 / 8 * u * (1 - u * u / 12)
    return 2 * (1 - cdf)


def test_corrected_ttest_matches_a_hand_computed_example():
    a = [0.80, 0.90, 0.85, 0.95, 0.90]
    b = [0.78, 0.85, 0.86, 0.90, 0.85]
    # d = [0.02, 0.05, -0.01, 0.05, 0.05]: mean 0.032, var (ddof 1) 0.00288 / 4 = 0.00072.
    # 5 folds of 80 training and 20 test rows: correction 1/5 + 20/80 = 0.45, so the
    # variance of the mean is 0.45 * 0.00072 = 0.000324 = 0.018^2 and t = 0.032 / 0.018 = 16/9.
    test = corrected_ttest(a, b, n_train=80, n_test=20)
    assert test.mean_diff == pytest.approx(0.032)
    assert test.t == pytest.approx(16 / 9)
    assert test.df == 4
    assert test.p_value == pytest.approx(_t4_two_sided_p(16 / 9), abs=1e-9)
    assert test.p_value == pytest.approx(0.150072, abs=1e-6)
    # The uncorrected paired t-test on the same folds is far more confident: that is the point.
    assert stats.ttest_rel(a, b).pvalue < 0.08 < test.p_value
    assert corrected_ttest(b, a, 80, 20).p_value == pytest.approx(test.p_value) and corrected_ttest(b, a, 80, 20).t < 0


def test_corrected_ttest_without_variance():
    same = corrected_ttest([0.9, 0.8, 0.7], [0.9, 0.8, 0.7], 20, 10)
    assert same.p_value == 1.0 and same.mean_diff == 0.0
    shifted = corrected_ttest([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], 20, 10)
    assert shifted.p_value == 0.0 and shifted.mean_diff == pytest.approx(0.1) and shifted.t == math.inf


@pytest.mark.parametrize(("a", "b"), [([0.9, 0.8], [0.9]), ([0.9], [0.8]), ([0.9, math.nan], [0.8, 0.7])])
def test_corrected_ttest_refuses_unpaired_scores(a, b):
    with pytest.raises(ValueError, match="fold scores"):
        corrected_ttest(a, b, 20, 10)


def _row(name, scores, metric="balanced_accuracy", predict_seconds=0.01):
    return CandidateResult(name, name, {}, OK, fold_scores={metric: tuple(scores)}, predict_seconds=predict_seconds)


def _board(rows, metric="balanced_accuracy"):
    return Leaderboard("binary", metric, (metric,), len(rows[0].fold_scores.get(metric, (0, 0))), rank(rows, METRICS[metric]))


STABLE_TOP = [0.29, 0.31, 0.30, 0.32, 0.28]  # r2 about 0.30 on every fold
NOISY_WORSE = [-0.25, 0.18, 0.10, -0.05, 0.12]  # r2 0.02 on average, swinging from -0.25 to 0.18


def test_a_much_worse_noisy_simpler_candidate_is_not_chosen():
    board = _board([_row("svm", STABLE_TOP, "r2"), _row("linear", NOISY_WORSE, "r2")], metric="r2")
    selection = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), n_train=80, n_test=20)
    assert selection.top == "svm" and selection.chosen == "svm"
    linear = selection.comparison("linear")
    # The old rule was fooled: its own spread made a loss of 0.28 r2 "not significant"...
    assert linear.within_noise and linear.p_value > 0.05
    # ...whereas the chance that it loses more than 0.005 r2 is 96%: not practically as good.
    assert linear.expected_loss == pytest.approx(0.28) and linear.p_worse > 0.95 and not linear.equivalent
    assert "svm has the best mean r2" in selection.reason and "is kept" in selection.reason
    assert "the closest, linear: expected loss 0.2800 r2" in selection.reason and "96.2%" in selection.reason
    assert "tolerance (0.005 r2)" in selection.reason and "Bayesian correlated t-test on 5 folds" in selection.reason


def test_a_truly_equivalent_simpler_candidate_is_chosen():
    top = np.array([0.900, 0.930, 0.870, 0.920, 0.880])
    close = top - np.array([0.001, 0.0015, 0.0005, 0.001, 0.001])  # 0.001 worse on every fold, give or take 0.0005
    board = _board([_row("mlp", top), _row("linear", close), _row("baseline", [0.5] * 5)])
    selection = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), n_train=80, n_test=20)
    assert selection.top == "mlp" and selection.chosen == "linear"
    linear = selection.comparison("linear")
    assert linear.equivalent and linear.p_worse < 0.001 and linear.expected_loss == pytest.approx(0.001)
    # The old rule refused it: so steady a loss is "significant", however small.
    assert not linear.within_noise and linear.p_value < 0.05
    assert not selection.comparison("baseline").equivalent and selection.comparison("baseline").p_worse > 0.99
    assert selection.reason.startswith("simplest_equivalent: linear is the simplest candidate practically as good as the top one, mlp")
    assert "expected loss 0.0010 balanced_accuracy" in selection.reason and "tolerance (0.005 balanced_accuracy) is 0.0%" in selection.reason
    assert "at most 5% accepted" in selection.reason
    assert selection.tolerance == 0.005 and selection.tolerance_basis == "0.005 balanced_accuracy"
    # The usual rule takes the top one regardless.
    assert select_model(board, EvaluationConfig(selection=BEST_MEAN), 80, 20).chosen == "mlp"


@pytest.mark.parametrize(("loss", "chosen"), [(0.0049, "linear"), (0.0051, "mlp")])
def test_the_tolerance_is_the_boundary(loss, chosen):
    top = np.array([0.900, 0.930, 0.870, 0.920, 0.880])
    steady = top - loss + np.array([0.0, 1e-5, -1e-5, 0.0, 0.0])  # near-zero variance
    board = _board([_row("mlp", top), _row("linear", steady)])
    selection = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20)
    assert selection.chosen == chosen
    assert selection.comparison("linear").p_worse == pytest.approx(0.0 if chosen == "linear" else 1.0, abs=1e-4)
    # A wider tolerance accepts the larger loss too; none accepts only a candidate that does not lose.
    assert select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT, tolerance=0.006), 80, 20).chosen == "linear"
    assert select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT, tolerance=0.0), 80, 20).chosen == "mlp"


def test_a_metric_where_lower_is_better_gets_a_relative_tolerance():
    top = np.array([290.0, 310.0, 280.0, 300.0, 320.0])  # mean rmse 300: the tolerance is 1%, 3.0
    close = top + np.array([2.0, 2.1, 1.9, 2.0, 2.0])  # higher rmse: worse by 2.0
    far = top + np.array([4.0, 4.1, 3.9, 4.0, 4.0])  # worse by 4.0
    rows = [_row("svm", top, "rmse"), _row("random_forest", close, "rmse"), _row("linear", far, "rmse")]
    board = _board(rows, metric="rmse")
    selection = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20)
    assert selection.top == "svm" and selection.chosen == "random_forest"  # linear is simpler but loses 4.0 > 3.0
    assert selection.tolerance == pytest.approx(3.0) and selection.tolerance_basis == "1% of the top one's 300 rmse = 3"
    forest, linear = selection.comparison("random_forest"), selection.comparison("linear")
    assert forest.mean_diff == pytest.approx(2.0) and forest.expected_loss == pytest.approx(2.0)  # positive: worse
    assert forest.equivalent and not linear.equivalent and linear.p_worse > 0.99
    assert "also practically as good" not in selection.reason and "1% of the top one's 300 rmse = 3" in selection.reason
    # A 2% tolerance (6.0) lets the simplest one through; the absolute tolerance does not apply to rmse.
    assert select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT, relative_tolerance=0.02), 80, 20).chosen == "linear"
    assert select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT, tolerance=10.0), 80, 20).chosen == "random_forest"


def test_loss_posterior_matches_a_hand_computed_example():
    a = [0.80, 0.90, 0.85, 0.95, 0.90]
    b = [0.78, 0.85, 0.86, 0.90, 0.85]
    # As in the t-test example: the loss of b has mean 0.032 and posterior scale 0.018 on 4
    # degrees of freedom. P(loss > 0.005) = P(T > (0.005 - 0.032) / 0.018 = -1.5) = CDF(1.5).
    post = loss_posterior(a, b, n_train=80, n_test=20, tolerance=0.005)
    assert post.expected_loss == pytest.approx(0.032) and post.scale == pytest.approx(0.018) and post.df == 4
    assert post.p_worse == pytest.approx(1 - _t4_two_sided_p(1.5) / 2, abs=1e-9)
    assert post.p_worse == pytest.approx(0.896, abs=1e-9)
    assert not post.equivalent(0.05) and post.equivalent(0.9)
    # The direction: for a loss (lower is better) the same scores mean the opposite.
    flipped = loss_posterior(b, a, 80, 20, 0.005, greater_is_better=False)
    assert flipped.expected_loss == pytest.approx(0.032) and flipped.p_worse == pytest.approx(post.p_worse)
    assert loss_posterior(b, a, 80, 20, 0.005).expected_loss == pytest.approx(-0.032)  # b better than a: no loss
    assert loss_posterior(b, a, 80, 20, 0.005).p_worse == pytest.approx(_t4_two_sided_p(0.037 / 0.018) / 2, abs=1e-9)
    # More overlap between training sets (fewer training rows per test row) widens the posterior.
    assert loss_posterior(a, b, 40, 20, 0.005).scale > post.scale


def test_loss_posterior_without_variance_knows_the_loss_exactly():
    top = [0.9, 0.8, 0.7]
    assert loss_posterior(top, top, 20, 10, 0.0).p_worse == 0.0
    assert loss_posterior(top, [0.896, 0.796, 0.696], 20, 10, 0.005).p_worse == 0.0
    assert loss_posterior(top, [0.894, 0.794, 0.694], 20, 10, 0.005).p_worse == 1.0
    exact = loss_posterior(top, [0.895, 0.795, 0.695], 20, 10, 0.005)  # exactly the tolerance: at most it, accepted
    assert exact.scale == 0.0 and exact.p_worse == 0.0
    # Scores in the thousands: float noise in their differences is not variance.
    big = [3000.1, 2900.7, 3100.3]
    assert loss_posterior(big, [v + 20.0 for v in big], 20, 10, 30.0, greater_is_better=False).p_worse == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([0.9, 0.8], [0.9], 0.005), "fold scores"),
        (([0.9, math.nan], [0.8, 0.7], 0.005), "fold scores hold NaN"),
        (([0.9, 0.8], [0.8, 0.7], -0.01), "tolerance must be a finite number of 0 or more"),
        (([0.9, 0.8], [0.8, 0.7], math.inf), "tolerance must be a finite number"),
    ],
)
def test_loss_posterior_refuses_bad_input(args, message):
    a, b, tolerance = args
    with pytest.raises(ValueError, match=message):
        loss_posterior(a, b, 20, 10, tolerance)


def test_the_deprecated_rule_name_means_simplest_equivalent():
    board = _board([_row("svm", STABLE_TOP, "r2"), _row("linear", NOISY_WORSE, "r2")], metric="r2")
    old = select_model(board, EvaluationConfig(selection=SIMPLEST_WITHIN_NOISE), 80, 20)
    new = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20)
    assert old.chosen == new.chosen == "svm" and old.rule == SIMPLEST_EQUIVALENT
    assert old.reason.startswith("simplest_equivalent (configured as 'simplest_within_noise', a deprecated name for it): ")
    assert old.reason.split(": ", 1)[1] == new.reason.split(": ", 1)[1]


def test_the_top_model_that_is_also_the_simplest_is_kept():
    board = _board([_row("linear", STABLE_TOP, "r2"), _row("svm", NOISY_WORSE, "r2"), _row("baseline", [0.0] * 5, "r2")], metric="r2")
    selection = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20)
    assert selection.chosen == "linear"
    assert "is also the simplest candidate" in selection.reason and "tolerance 0.005 r2" in selection.reason


def test_the_baseline_is_the_floor_never_the_choice():
    # Everything is practically as good as the baseline: the simplest real model is chosen, not the dummy.
    floor = [0.52, 0.48, 0.55, 0.45, 0.50]
    board = _board([_row("baseline", floor), _row("svm", [v - 0.001 for v in floor]), _row("mlp", [v - 0.002 for v in floor])])
    selection = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20)
    assert selection.top == "baseline" and selection.chosen == "svm"
    assert "floor" in selection.reason and "also practically as good: mlp" in selection.reason
    assert select_model(board, EvaluationConfig(selection=BEST_MEAN), 80, 20).chosen == "svm"
    # Nothing practically as good as the baseline: the best real model by mean.
    worse = _board([_row("baseline", floor), _row("mlp", [0.40, 0.49, 0.44, 0.47, 0.42]), _row("linear", [0.30, 0.45, 0.35, 0.40, 0.33])])
    selection = select_model(worse, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20)
    assert selection.chosen == "mlp" and "no candidate is practically as good as the top one, the baseline" in selection.reason
    # ...unless it is the only candidate left.
    only = _board([_row("baseline", [0.5] * 5), CandidateResult("svm", "SVC", {}, FAILED, error="boom")])
    assert select_model(only, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20).chosen == "baseline"


def test_ties_in_complexity_are_broken_by_predict_time():
    top = [0.90, 0.93, 0.87, 0.92, 0.88]
    board = _board([_row("a", top, predict_seconds=0.5), _row("b", [v - 0.001 for v in top], predict_seconds=0.01)])
    assert select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20, complexity={"a": 1, "b": 1}).chosen == "b"
    assert select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20, complexity={"a": 1, "b": 2}).chosen == "a"


def test_the_annotated_leaderboard_marks_the_chosen_row_and_failed_candidates():
    failed = CandidateResult("svm", "SVC", {}, FAILED, error="boom")
    top = [0.90, 0.93, 0.87, 0.92, 0.88]
    board = _board([_row("mlp", top), _row("linear", [v - 0.001 for v in top]), failed])
    frame = annotated_leaderboard(board, select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20))
    assert list(frame.columns[:9]) == [
        "rank", "model", "status", "chosen", "diff_vs_top", "p_value", "within_noise", "p_worse", "equivalent",
    ]
    rows = frame.set_index("model")
    assert rows["chosen"].to_dict() == {"mlp": False, "linear": True, "svm": False}
    assert rows["equivalent"].to_dict() == {"mlp": True, "linear": True, "svm": False}
    assert rows.loc["mlp", "p_value"] == 1.0 and rows.loc["mlp", "p_worse"] == 0.0 and rows.loc["linear", "p_worse"] == 0.0
    assert math.isnan(rows.loc["svm", "p_value"]) and math.isnan(rows.loc["svm", "p_worse"])


def test_select_model_refuses_an_unknown_rule():
    with pytest.raises(ValueError, match="unknown selection rule 'best'; use simplest_equivalent or best_mean"):
        select_model(_board([_row("linear", STABLE_TOP)]), EvaluationConfig(selection="best"), 80, 20)
