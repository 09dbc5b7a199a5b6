import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from stages.deployment import PREDICTION, score
from stages.modeling import ModelSettings, build_candidates
from stages.preparation import build_preprocessor, features_and_target
from stages.understanding import profile_data


@pytest.fixture
def fitted(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    model = build_candidates(["linear"], build_preprocessor(profile, 0.01, 20), ModelSettings("binary", 0))["linear"]
    return model.fit(X, y), profile


def test_score_keeps_every_row_in_order_and_adds_predictions_and_probabilities(fitted, mixed_frame):
    model, profile = fitted
    rows = mixed_frame.drop(columns="label").iloc[::-1].assign(note="carried through")
    out = score(model, rows, profile.features, profile.numeric_features)
    assert list(out.index) == list(rows.index) and len(out) == len(rows)
    assert set(out[PREDICTION]) <= {"yes", "no"}
    assert np.allclose(out["proba_no"] + out["proba_yes"], 1.0)
    assert (out["note"] == "carried through").all()
    assert "prediction" not in rows.columns  # the input is not modified


def test_integer_input_for_a_float_feature_is_accepted(fitted, mixed_frame):
    model, profile = fitted
    rows = mixed_frame.drop(columns="label").head(3).assign(x2=[1, 2, 3])
    assert len(score(model, rows, profile.features, profile.numeric_features)) == 3


def test_a_missing_column_is_named(fitted, mixed_frame):
    model, profile = fitted
    with pytest.raises(DataError, match=r"lacks 1 column\(s\) the model needs: x2"):
        score(model, mixed_frame.drop(columns=["label", "x2"]), profile.features, profile.numeric_features)


def test_text_in_a_numeric_column_is_named_with_the_bad_value(fitted, mixed_frame):
    model, profile = fitted
    rows = mixed_frame.drop(columns="label").astype({"x1": object})
    rows.loc[7, "x1"] = "n/a"
    with pytest.raises(DataError, match=r"column 'x1' must be numeric but holds 'n/a' \(row 8\)"):
        score(model, rows, profile.features, profile.numeric_features)
