"""The data contract: what a model expects as input, the checks on rows to score, and scoring them as trained."""

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.settings import PreparationConfig
from stages.contract import PREDICTION, DataContract, build_contract, check_rows, contract_from_signature, score
from stages.model_registry import ModelSettings, build_candidates
from stages.preparation import build_preprocessor, features_and_target
from stages.understanding import profile_data


@pytest.fixture
def fitted(mixed_frame):
    profile = profile_data(mixed_frame, "label")
    X, y = features_and_target(mixed_frame, profile)
    model = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))["linear"]
    return model.fit(X, y), build_contract(X, profile)


def test_score_keeps_every_row_in_order_and_adds_predictions_and_probabilities(fitted, mixed_frame):
    model, contract = fitted
    rows = mixed_frame.drop(columns="label").iloc[::-1].assign(note="carried through")
    out = score(model, rows, contract).frame
    assert list(out.index) == list(rows.index) and len(out) == len(rows)
    assert set(out[PREDICTION]) <= {"yes", "no"}
    assert np.allclose(out["proba_no"] + out["proba_yes"], 1.0)
    assert (out["note"] == "carried through").all()
    assert "prediction" not in rows.columns  # the input is not modified


def test_integer_input_for_a_float_feature_is_accepted(fitted, mixed_frame):
    model, contract = fitted
    rows = mixed_frame.drop(columns="label").head(3).assign(x2=[1, 2, 3])
    assert len(score(model, rows, contract).frame) == 3


def test_a_missing_column_is_named(fitted, mixed_frame):
    model, contract = fitted
    with pytest.raises(DataError, match=r"lacks 1 column\(s\) the model needs: x2"):
        score(model, mixed_frame.drop(columns=["label", "x2"]), contract)


def test_text_in_a_numeric_column_is_named_with_the_bad_value(fitted, mixed_frame):
    model, contract = fitted
    rows = mixed_frame.drop(columns="label").astype({"x1": object})
    rows.loc[7, "x1"] = "n/a"
    with pytest.raises(DataError, match=r"column 'x1' must be numeric \(it was float64 in training\) but the data to score holds 'n/a' \(row 8"):
        score(model, rows, contract)


def test_an_infinite_value_is_an_error_not_a_crash(fitted, mixed_frame):
    model, contract = fitted
    rows = mixed_frame.drop(columns="label").assign(x2=np.inf)
    with pytest.raises(DataError, match=r"column 'x2' of the data to score holds an infinite value \(row 1"):
        score(model, rows, contract)


def test_the_contract_records_columns_types_categories_ranges_and_missing_shares(fitted, mixed_frame):
    _, contract = fitted
    by_name = {c.name: c for c in contract.columns}
    assert contract.features == ("x1", "x2", "colour") and contract.numeric == ("x1", "x2")
    assert contract.target == "label"
    assert by_name["colour"].categories == ("blue", "green", "red") and by_name["colour"].dtype in ("str", "object")
    assert by_name["x2"].minimum == pytest.approx(mixed_frame["x2"].min())
    assert by_name["x2"].maximum == pytest.approx(mixed_frame["x2"].max())
    assert by_name["x2"].missing_share == pytest.approx(2 / 60)
    assert DataContract.from_dict(contract.to_dict()) == contract  # survives JSON and MLmodel YAML


def test_unseen_categories_out_of_range_values_and_extra_columns_are_scored_and_counted(fitted, mixed_frame):
    model, contract = fitted
    rows = mixed_frame.drop(columns="label").assign(extra="x")
    rows.loc[[0, 1, 2], "colour"] = "purple"
    rows.loc[4, "x2"] = 1e6
    scored = score(model, rows, contract)
    assert len(scored.frame) == len(rows) and list(scored.frame.index) == list(rows.index)
    assert scored.frame[PREDICTION].notna().all()
    assert scored.check.unseen == {"colour": 3} and scored.check.out_of_range == {"x2": 1}
    assert scored.check.ignored == ("row_id", "constant", "extra")
    text = "\n".join(scored.warnings)
    assert "'colour' has 3 of 60 rows with a category not seen in training (e.g. 'purple')" in text
    assert "'x2' has 1 of 60 rows outside the training range" in text and "extra" in text


def test_missing_values_beyond_the_training_share_are_reported(fitted, mixed_frame):
    _, contract = fitted
    rows = mixed_frame.drop(columns="label")
    rows.loc[:29, "x1"] = np.nan
    check = check_rows(rows, contract)
    assert check.missing == {"x1": 30}
    assert any("'x1' is 50% missing (30 of 60 rows) against 0% in training" in w for w in check.warnings)


def test_a_model_without_a_saved_contract_still_checks_columns_and_types():
    contract = contract_from_signature(("a", "b"), ("a",))
    with pytest.raises(DataError, match="column 'a' must be numeric but the request holds 'x'"):
        check_rows(pd.DataFrame({"a": ["x"], "b": ["y"]}), contract, what="the request")
    assert check_rows(pd.DataFrame({"a": [1.0], "b": ["new"]}), contract).warnings == ()


def test_high_cardinality_text_is_encoded_into_a_bounded_number_of_columns():
    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame(
        {
            # 30 common cities (70% of rows) and a long tail of 5,000 rare ones
            "city": [f"city-{i}" for i in np.where(rng.random(n) < 0.7, rng.integers(0, 30, n), rng.integers(30, 5_030, n))],
            "x": rng.normal(size=n),
            "y": rng.choice(["a", "b"], size=n),
        }
    )
    profile = profile_data(frame, "y")
    assert any("'city' has" in w and "high cardinality" in w and "grouped" in w for w in profile.warnings)
    X, _ = features_and_target(frame, profile)
    encoded = build_preprocessor(profile, PreparationConfig()).fit_transform(X)
    assert encoded.shape == (n, 1 + 20)  # one numeric column and at most 20 one-hot columns
    contract = build_contract(X, profile)
    assert next(c for c in contract.columns if c.name == "city").categories is None  # too many to list


def test_the_raw_training_file_scores_as_it_is_through_the_saved_plan(trained_on_raw):
    raw, model, X, contract, _ = trained_on_raw
    assert contract.features == ("age", "income", "visit_month", "visit_dayofweek", "colour")  # visit_year is constant
    assert contract.inputs == ("age", "income", "visit", "colour")
    saved = DataContract.from_dict(contract.to_dict())  # as the model's metadata holds it
    assert saved == contract
    scored = score(model, raw.drop(columns="y"), saved)
    assert scored.frame[PREDICTION].tolist() == model.predict(X).tolist()  # as trained, cell for cell
    assert list(scored.frame.columns[:4]) == ["age", "income", "visit", "colour"] and scored.frame["income"].iloc[0] == raw["income"].iloc[0]
    text = "\n".join(scored.warnings)
    assert "read 12 cells as missing" in text and "thousands separators" in text and "'colour' 40" in text
    assert "ignored" not in text  # 'visit' is a model input: its calendar features are


def test_a_raw_request_is_read_by_the_plan_and_a_bad_cell_is_still_named(trained_on_raw):
    _, model, _, contract, _ = trained_on_raw
    one = pd.DataFrame({"age": [" ?"], "income": ["3,750"], "visit": ["2021-03-04"], "colour": ["red  "]})
    check = check_rows(one, contract, what="the request")
    assert check.features.iloc[0].tolist()[1:] == [3750.0, 3.0, 3.0, "red"] and np.isnan(check.features.iloc[0, 0])
    with pytest.raises(DataError, match=r"column 'income' must be numeric .* holds 'lots' \(row 1"):
        check_rows(one.assign(income="lots"), contract, what="the request")
    with pytest.raises(DataError, match=r"lacks 1 column\(s\) the model needs: visit; add them \(the model needs: age, income, visit, colour\)"):
        check_rows(one.drop(columns="visit"), contract)


def test_an_old_contract_without_a_plan_still_loads_and_checks_rows_as_given(fitted, mixed_frame):
    model, contract = fitted
    old = contract.to_dict()
    old.pop("cleaning", None)  # what crispml wrote before the data step
    loaded = DataContract.from_dict(old)
    assert loaded.cleaning is None and loaded.inputs == loaded.features
    rows = mixed_frame.drop(columns="label").assign(colour=" red")
    check = check_rows(rows, loaded)
    assert check.cleaning is None and check.unseen == {"colour": len(rows)}  # not stripped: as before
    assert len(score(model, rows, loaded).frame) == len(rows)
