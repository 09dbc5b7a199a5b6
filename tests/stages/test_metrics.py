import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from stages.metrics import DEFAULT_METRIC, METRICS, metrics_for, score_all


def test_every_task_has_a_default_metric_that_fits_it():
    for task, name in DEFAULT_METRIC.items():
        assert task in METRICS[name].tasks


def test_binary_and_multiclass_probability_metrics_match_sklearn():
    y = np.array(["a", "b", "a", "b"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    scores = score_all(metrics_for("binary"), y, np.array(["a", "b", "b", "b"]), proba, np.array(["a", "b"]))
    assert scores["roc_auc"] == pytest.approx(roc_auc_score(y == "b", proba[:, 1]))
    assert scores["log_loss"] == pytest.approx(log_loss(y, proba, labels=["a", "b"]))
    assert scores["accuracy"] == pytest.approx(0.75)

    y3 = np.array([0, 1, 2, 2])
    p3 = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.2, 0.3]])
    scores = score_all(metrics_for("multiclass"), y3, p3.argmax(axis=1), p3, np.array([0, 1, 2]))
    assert scores["roc_auc"] == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr"))


def test_regression_metrics():
    scores = score_all(metrics_for("regression"), np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), None, None)
    assert scores["mae"] == pytest.approx(2 / 3)
    assert scores["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert not METRICS["rmse"].greater_is_better and METRICS["r2"].greater_is_better


def test_each_metric_says_how_its_tolerance_is_read():
    relative = {name for name, m in METRICS.items() if m.relative_tolerance}
    assert relative == {"rmse", "mae", "log_loss"}  # no fixed scale: a share of the top one's score
    assert METRICS["balanced_accuracy"].tolerance(0.9) == (0.005, "0.005 balanced_accuracy")
    assert METRICS["r2"].tolerance(-0.3, absolute=0.02) == (0.02, "0.02 r2")
    value, basis = METRICS["rmse"].tolerance(250.0)
    assert value == pytest.approx(2.5) and basis == "1% of the top one's 250 rmse = 2.5"
    assert METRICS["log_loss"].tolerance(0.2, relative=0.05)[0] == pytest.approx(0.01)
    assert METRICS["mae"].tolerance(float("nan"))[0] == 0.0
