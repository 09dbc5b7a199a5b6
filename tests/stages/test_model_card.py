"""The model card: the chosen model and why, the go/no-go decision, what the data step did, and how to use the model."""

import pytest

from pipeline.settings import BusinessConfig, EvaluationConfig, PreparationConfig
from stages.evaluation import Footprint, evaluate_holdout
from stages.gate import decide
from stages.importance import permutation_importances
from stages.model_card import model_card
from stages.model_registry import ModelSettings, build_candidates
from stages.modeling import compare_models, make_folds
from stages.preparation import build_preprocessor, features_and_target, split_holdout
from stages.selection import select_model
from stages.understanding import profile_data


@pytest.fixture
def card_inputs(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    split = split_holdout(X, y, profile.task, 0.25, seed=0)
    candidates = build_candidates(["baseline", "linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))
    board = compare_models(candidates, split.X_train, split.y_train, make_folds(split.y_train, "binary", 3, 0), "binary", "roc_auc")
    selection = select_model(board, EvaluationConfig(selection="simplest_within_noise"), 30, 15)
    chosen = next(r for r in board.rows if r.name == selection.chosen)
    result = evaluate_holdout(chosen, candidates[chosen.name], split, "binary", "roc_auc")
    importance = permutation_importances(result.fitted, split.X_test, split.y_test, "roc_auc", result.classes, 0)
    footprint = Footprint(ms_per_row=0.02, model_mb=0.01)
    return {
        "experiment": "churn",
        "objective": "",
        "profile": profile,
        "data_sha256": "ab" * 32,
        "leaderboard": board,
        "selection": selection,
        "evaluation": result,
        "footprint": footprint,
        "importance": importance,
        "estimator": "LogisticRegression",
        "candidate_warnings": (),
        "model_uri": "models:/m-123",
    }


def test_the_model_card_names_the_chosen_model_and_the_go_decision(card_inputs):
    inputs = card_inputs
    decision = decide("roc_auc", inputs["evaluation"].holdout["roc_auc"], 0.5, inputs["footprint"], BusinessConfig(min_score=0.6))
    card = model_card(**inputs, decision=decision, registered="models:/churn@champion", export_dir="models/churn/model")
    assert card.startswith("# Model card: churn")
    assert "**Model:** `linear` (LogisticRegression), chosen by `simplest_equivalent`" in card  # the deprecated name maps to it
    assert "**Decision: GO**" in card and "NO-GO" not in card
    assert "Predict `label` (binary)" in card  # the generated intended use
    assert "| min_score | roc_auc at least as good as 0.6 |" in card
    assert inputs["selection"].reason in card
    assert "| 1 | linear |" in card and "| **yes** |" in card and "p-value" in card
    assert f"| roc_auc | {inputs['evaluation'].cv_mean['roc_auc']:.4f}" in card
    assert "`x1`" in card and "ID-like" in card  # features, and the dropped row_id with its reason
    assert 'mlflow.pyfunc.load_model("models:/churn@champion")' in card and "registered as `models:/churn@champion`" in card
    assert "Exported to `models/churn/model`" in card


def test_the_model_card_of_a_no_go_model_says_why_and_how_to_inspect_it(card_inputs):
    inputs = card_inputs
    decision = decide("roc_auc", inputs["evaluation"].holdout["roc_auc"], 0.5, inputs["footprint"], BusinessConfig(max_model_mb=0.001))
    inputs = {**inputs, "objective": "Flag customers likely to churn next month", "candidate_warnings": ("ConvergenceWarning: lbfgs failed",)}
    card = model_card(**inputs, decision=decision, registered="", export_dir="")
    assert "**Decision: NO-GO**: the model is 0.010 MB; at most 0.001 is allowed" in card
    assert "Flag customers likely to churn next month" in card
    assert "- the gate failed: the model is 0.010 MB" in card
    assert "- while fitting linear: ConvergenceWarning: lbfgs failed" in card
    assert "neither registered as `champion` nor exported" in card
    assert 'mlflow.pyfunc.load_model("models:/m-123")' in card and "Exported to" not in card


def test_the_model_card_shows_what_the_data_step_did(trained_on_raw, card_inputs):
    *_, profile = trained_on_raw
    inputs = {**card_inputs, "profile": profile}
    decision = decide("roc_auc", inputs["evaluation"].holdout["roc_auc"], 0.5, inputs["footprint"], BusinessConfig())
    card = model_card(**inputs, decision=decision, registered="", export_dir="models/m/model")
    section = card[card.index("### What the data step did") : card.index("## How the model was chosen")]
    assert "- read as missing (markers such as `?`, `NA`, `-`, blank): `age` 12 cells (e.g. '?')" in section
    assert "- spaces stripped around text: `colour` 40 cells, `y` 30 cells" in section
    assert "- text read as numbers: `age`, `income` (118 cells with thousands separators, e.g. '76,630')" in section  # 2 are below 1,000
    assert "- dates turned into calendar features: `visit` -> `visit_year`, `visit_month`, `visit_dayofweek`" in section
    assert "- dropped columns: `visit_year` (constant" in section
    assert "with the columns `age`, `income`, `visit`, `colour`" in card  # what crispml predict and serve take
