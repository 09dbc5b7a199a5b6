"""Deployment: the chosen pipeline refitted on every labelled row, its manifest, and results made plain JSON."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from pipeline.settings import PreparationConfig
from stages.contract import CONTRACT_KEY, DataContract, build_contract
from stages.deployment import INPUT_EXAMPLE_ROWS, json_safe, refit_for_deployment
from stages.evaluation import evaluate_holdout
from stages.metrics import METRICS
from stages.model_registry import ModelSettings, build_candidates
from stages.modeling import FAILED, OK, CandidateResult, Leaderboard, rank
from stages.preparation import build_preprocessor, features_and_target, split_holdout
from stages.understanding import profile_data


@pytest.fixture
def deployable(mixed_frame):
    """What the runner hands deployment: every labelled row, the chosen unfitted pipeline, its leaderboard and evaluation."""
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    pipeline = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))["linear"]
    rows = [
        CandidateResult("linear", "LogisticRegression", {}, OK, fold_scores={"roc_auc": (0.80, 0.90, 0.85)}),
        CandidateResult("svm", "SVC", {}, FAILED, error="boom"),
    ]
    board = Leaderboard("binary", "roc_auc", ("roc_auc",), 3, rank(rows, METRICS["roc_auc"]))
    evaluation = evaluate_holdout(rows[0], pipeline, split_holdout(X, y, profile.task, 0.25, seed=0), "binary", "roc_auc")
    return profile, X, y, pipeline, board, evaluation


def test_the_chosen_pipeline_is_refitted_on_every_labelled_row_and_left_unfitted_itself(deployable):
    profile, X, y, pipeline, board, evaluation = deployable
    final = refit_for_deployment(pipeline, X, y, profile, board, evaluation, "ab" * 32, 7)
    with pytest.raises(NotFittedError):
        check_is_fitted(pipeline)
    everything = clone(pipeline).fit(X, y)
    assert (final.model.predict(X) == everything.predict(X)).all()
    assert np.allclose(final.model.predict_proba(X), everything.predict_proba(X))
    assert not np.allclose(final.model.predict_proba(X), evaluation.fitted.predict_proba(X))  # not the holdout's 45 rows
    assert [type(step).__name__ for _, step in final.model.steps] == ["ColumnTransformer", "LogisticRegression"]
    assert final.name == "linear" and final.features == ("x1", "x2", "colour") and final.numeric == ("x1", "x2")
    pd.testing.assert_frame_equal(final.input_example, X.head(INPUT_EXAMPLE_ROWS))


def test_the_manifest_records_provenance_scores_the_leaderboard_and_the_contract(deployable):
    profile, X, y, pipeline, board, evaluation = deployable
    manifest = refit_for_deployment(pipeline, X, y, profile, board, evaluation, "ab" * 32, 7).manifest
    assert (manifest["model"], manifest["estimator"], manifest["task"], manifest["metric"]) == ("linear", "LogisticRegression", "binary", "roc_auc")
    assert manifest["seed"] == 7 and manifest["tuning"] is None and manifest["classes"] == ["no", "yes"]
    assert manifest["data"] == {"source": profile.source, "sha256": "ab" * 32, "rows": 60, "labelled_rows": 60, "columns": 6, "target": "label"}
    assert manifest["features"]["names"] == ["x1", "x2", "colour"] and set(manifest["features"]["dropped"]) == {"row_id", "constant"}
    assert manifest["cv"] == {"mean": evaluation.cv_mean, "std": evaluation.cv_std, "folds": 3}
    assert manifest["holdout"] == evaluation.holdout
    assert {"python", "scikit-learn", "mlflow"} <= set(manifest["packages"])
    assert [r["model"] for r in manifest["leaderboard"]] == ["linear", "svm"]
    assert manifest["leaderboard"][0]["roc_auc_mean"] == pytest.approx(0.85) and manifest["leaderboard"][1]["roc_auc_mean"] is None
    assert DataContract.from_dict(manifest[CONTRACT_KEY]) == build_contract(X, profile)
    json.dumps(json_safe(manifest), allow_nan=False)  # as the export writes it (cv scores of metrics not scored are NaN)


def test_a_pipeline_already_fitted_on_every_row_is_used_as_it_is(deployable):
    profile, X, y, pipeline, board, evaluation = deployable
    already = clone(pipeline).fit(X.iloc[:30], y.iloc[:30])  # fitted on fewer rows, to tell it from a refit
    final = refit_for_deployment(pipeline, X, y, profile, board, evaluation, "ab" * 32, 0, fitted=already)
    assert np.allclose(final.model.predict_proba(X), already.predict_proba(X))
    assert not np.allclose(final.model.predict_proba(X), clone(pipeline).fit(X, y).predict_proba(X))


def test_json_safe_makes_numpy_scalars_nan_and_keys_plain():
    out = json_safe({1: np.float64(0.5), "n": (np.int64(2), math.nan, np.float32("nan")), "ok": [None, "x", True], "d": {"b": np.bool_(True)}})
    assert out == {"1": 0.5, "n": [2, None, None], "ok": [None, "x", True], "d": {"b": True}}
    assert type(out["1"]) is float and type(out["n"][0]) is int and type(out["d"]["b"]) is bool
    assert json.loads(json.dumps(out, allow_nan=False)) == out
