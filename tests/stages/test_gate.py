"""The go/no-go gate: each business criterion checked against the holdout score, the baseline and the footprint."""

import math

from pipeline.settings import BusinessConfig
from stages.evaluation import Footprint
from stages.gate import decide

FOOTPRINT = Footprint(ms_per_row=0.05, model_mb=0.2)


def test_the_gate_says_go_when_every_criterion_holds():
    decision = decide(
        "balanced_accuracy", 0.95, 0.33, FOOTPRINT,
        BusinessConfig(min_score=0.9, min_margin_over_baseline=0.5, max_latency_ms_per_row=1.0, max_model_mb=1.0),
    )
    assert decision.go and decision.label == "go" and decision.reasons == ()
    assert [c.criterion for c in decision.checks] == ["min_score", "min_margin_over_baseline", "max_latency_ms_per_row", "max_model_mb"]
    assert all(c.passed for c in decision.checks)


def test_the_gate_names_every_failed_criterion():
    decision = decide(
        "balanced_accuracy", 0.80, 0.75, Footprint(ms_per_row=3.0, model_mb=12.5),
        BusinessConfig(min_score=0.85, min_margin_over_baseline=0.1, max_latency_ms_per_row=1.0, max_model_mb=10.0),
    )
    assert not decision.go and decision.label == "no-go"
    assert len(decision.reasons) == 4
    text = " | ".join(decision.reasons)
    assert "holdout balanced_accuracy 0.8000 fails min_score 0.85" in text
    assert "beats the baseline's 0.7500 by 0.0500; more than 0.1 is required" in text
    assert "3.0000 ms per row; at most 1 is allowed" in text
    assert "12.500 MB; at most 10 is allowed" in text
    assert decision.to_dict()["decision"] == "no-go" and len(decision.to_dict()["checks"]) == 4


def test_min_score_is_a_maximum_for_a_metric_where_lower_is_better():
    assert decide("rmse", 240.0, 800.0, FOOTPRINT, BusinessConfig(min_score=250.0)).go
    decision = decide("rmse", 260.0, 800.0, FOOTPRINT, BusinessConfig(min_score=250.0))
    assert not decision.go and "highest (lower is better)" in decision.reasons[0]


def test_the_model_must_beat_the_baseline_by_default():
    assert not decide("r2", 0.0, 0.0, FOOTPRINT, BusinessConfig()).go  # equal to the dummy is not good enough
    assert not decide("rmse", 900.0, 800.0, FOOTPRINT, BusinessConfig()).go  # a higher rmse than the dummy's
    assert decide("rmse", 700.0, 800.0, FOOTPRINT, BusinessConfig()).go
    assert not decide("r2", math.nan, 0.0, FOOTPRINT, BusinessConfig()).go
