"""Data understanding: the task, the features kept and dropped, the profile's warnings, and the errors that stop a run."""

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from stages.understanding import BINARY, MULTICLASS, REGRESSION, detect_task, profile_data


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([1.5, 2.25, 3.0, 4.1, 5.0] * 4, REGRESSION),
        (list(range(40)), REGRESSION),  # integers, but too many distinct values for classes
        ([0, 1, 1, 0, None], BINARY),
        (["yes", "no", "yes", None], BINARY),
        ([True, False, True], BINARY),
        (["a", "b", "c", "a"], MULTICLASS),
        ([1, 2, 3, 1, 2, 3], MULTICLASS),
    ],
)
def test_detect_task(values, task):
    assert detect_task(pd.Series(values)) == task


def test_profile_keeps_features_and_drops_id_constant_and_empty(mixed_frame):
    frame = mixed_frame.assign(empty=np.nan)
    profile = profile_data(frame, "label", source="inline")
    assert profile.task == BINARY and profile.task_detected
    assert profile.numeric_features == ("x1", "x2")
    assert profile.categorical_features == ("colour",)
    assert set(profile.dropped) == {"row_id", "constant", "empty"}
    assert profile.dropped["row_id"].startswith("ID-like")
    assert profile.dropped["constant"].startswith("constant")
    assert profile.dropped["empty"].startswith("empty")
    by_name = {c.name: c for c in profile.columns}
    assert by_name["x2"].missing_share == pytest.approx(2 / 60)
    assert by_name["colour"].n_unique == 3
    assert dict(profile.class_balance).keys() == {"yes", "no"}


def test_profile_does_not_modify_its_input(mixed_frame):
    before = mixed_frame.copy()
    profile_data(mixed_frame, "label")
    pd.testing.assert_frame_equal(mixed_frame, before)


def test_text_column_with_every_value_different_is_id_like():
    frame = pd.DataFrame({"email": [f"user{i}@x.org" for i in range(30)], "y": [0, 1] * 15, "x": [i * 0.5 for i in range(30)]})
    profile = profile_data(frame, "y")
    assert "email" in profile.dropped


def test_missing_target_rows_are_counted_and_warned(mixed_frame):
    frame = mixed_frame.copy()
    frame.loc[[0, 1, 2], "label"] = None
    profile = profile_data(frame, "label")
    assert profile.target_missing == 3
    assert any("3 rows with a missing target" in w for w in profile.warnings)


def test_regression_profile_summarises_the_target(mixed_frame):
    profile = profile_data(mixed_frame, "x2")
    assert profile.task == REGRESSION
    summary = dict(profile.target_summary)
    assert summary["count"] == 58
    assert summary["mean"] == pytest.approx(mixed_frame["x2"].mean())


def test_absent_target_suggests_the_close_name(mixed_frame):
    with pytest.raises(DataError, match=r"column 'lable' named as target is not in inline; did you mean 'label'\?"):
        profile_data(mixed_frame, "lable", source="inline")


def test_constant_target_is_an_error(mixed_frame):
    with pytest.raises(DataError, match="target 'constant' .* is constant"):
        profile_data(mixed_frame, "constant")


def test_empty_target_is_an_error(mixed_frame):
    with pytest.raises(DataError, match="has no values"):
        profile_data(mixed_frame.assign(label=np.nan), "label")


def test_text_target_for_regression_is_an_error(mixed_frame):
    with pytest.raises(DataError, match="holds text .* but the task is regression; use --task binary"):
        profile_data(mixed_frame, "label", task="regression")


def test_continuous_target_for_classification_is_an_error(mixed_frame):
    with pytest.raises(DataError, match="looks continuous .* use --task regression"):
        profile_data(mixed_frame, "x1", task="multiclass")


def test_infinite_values_are_an_error(mixed_frame):
    frame = mixed_frame.copy()
    frame.loc[4, "x1"] = np.inf
    with pytest.raises(DataError, match=r"column 'x1' has 1 infinite values \(first at row 5: inf\)"):
        profile_data(frame, "label")


def test_no_usable_feature_is_an_error():
    frame = pd.DataFrame({"k": 1, "y": [0, 1] * 10})
    with pytest.raises(DataError, match=r"no usable feature column .*'k': constant: every value is 1\)"):
        profile_data(frame, "y")


def test_markdown_summary_lists_every_column(mixed_frame):
    text = profile_data(mixed_frame, "label", source="inline").to_markdown()
    for column in ["row_id", "x1", "x2", "colour", "constant"]:
        assert f"| {column} |" in text


def test_a_numeric_column_with_stray_text_is_an_error_naming_both_kinds(mixed_frame):
    frame = mixed_frame.assign(dose=[str(i % 9) for i in range(len(mixed_frame))])
    frame.loc[[4, 20], "dose"] = ["n/a", "<5"]
    with pytest.raises(DataError, match=r"column 'dose' mixes numbers and text \(58 numbers such as '0', 2 text values such as 'n/a'\).*data.categorical"):
        profile_data(frame, "label")


def test_codes_with_a_few_digits_are_a_category_not_mixed(mixed_frame):
    codes = np.resize(["A1", "B2", "C3", "7"], len(mixed_frame))
    profile = profile_data(mixed_frame.assign(code=codes), "label")
    assert "code" in profile.categorical_features


def test_data_categorical_makes_a_mixed_or_numeric_column_a_category(mixed_frame):
    frame = mixed_frame.assign(dose=[str(i % 9) for i in range(len(mixed_frame))], zip=np.resize([10115, 20095, 80331], len(mixed_frame)))
    frame.loc[4, "dose"] = "n/a"
    profile = profile_data(frame, "label", categorical=("dose", "zip"))
    assert {"dose", "zip"} <= set(profile.categorical_features)
    with pytest.raises(DataError, match=r"data.categorical names zipp, not in the data; did you mean 'zip'\?"):
        profile_data(frame, "label", categorical=("zipp",))


def test_an_infinite_target_is_an_error(mixed_frame):
    frame = mixed_frame.assign(x2=mixed_frame["x2"].fillna(1.0))
    frame.loc[7, "x2"] = np.inf
    with pytest.raises(DataError, match=r"target 'x2' in the data has 1 infinite values \(first at row 8\)"):
        profile_data(frame, "x2")


def test_high_cardinality_text_is_reported_with_how_it_is_handled():
    frame = pd.DataFrame({"city": [f"c{i % 80}" for i in range(400)], "y": [0.5 * i for i in range(400)]})
    profile = profile_data(frame, "y")
    assert any("'city' has 80 distinct values (high cardinality)" in w and "grouped as 'infrequent'" in w for w in profile.warnings)


def _unique_integers(n: int, low: int, high: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.arange(low, high), size=n, replace=False)


@pytest.mark.parametrize(
    ("n", "high", "dropped"),
    [
        (200, 1300, True),  # a shuffled key: 200 unique values in a range of 300 (a measurement would repeat ~66 times)
        (200, 1000 + 10**6, False),  # 200 unique values spread over a million: a measurement may well not repeat
        (60, 1070, False),  # tight and unique, but too few rows to tell a key from a per-entity table
        (100, 1110, True),  # the smallest table where values alone tell
    ],
)
def test_unique_integers_are_id_like_by_their_values_only_when_a_measurement_would_repeat(n, high, dropped):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"ref": _unique_integers(n, 1000, high), "x": rng.normal(size=n), "y": rng.choice(["a", "b"], size=n)})
    profile = profile_data(frame, "y")
    assert ("ref" in profile.dropped) is dropped
    if dropped:
        assert profile.dropped["ref"].startswith("ID-like by its values: ")
        assert any(w.startswith("column 'ref' is dropped as ID-like by its values") for w in profile.warnings)


def test_the_profile_carries_what_the_data_step_did():
    from stages.cleaning import clean_data

    raw = pd.DataFrame(
        {
            "age": [str(20 + i % 50) if i % 9 else "?" for i in range(120)],
            "when": [f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(120)],
            "ref": _unique_integers(120, 0, 150),
            "label": ["yes " if i % 2 else "no" for i in range(120)],
        }
    )
    cleaned = clean_data(raw, "label")
    profile = profile_data(cleaned.frame, "label", cleaning=cleaned.report)
    step = profile.data_step()
    assert step["missing_markers"] == {"age": 14} and step["stripped_spaces"] == {"label": 60}
    assert step["read_as_numbers"] == ["age"] and step["dates_expanded"] == {"when": ["when_year", "when_month", "when_dayofweek"]}
    assert set(step["dropped"]) == {"when_year", "ref"}  # one year only: constant
    assert profile.warnings[: len(cleaned.report.warnings)] == cleaned.report.warnings
    as_json = profile.to_dict()
    assert as_json["cleaning"]["missing_markers"] == {"age": 14} and as_json["cleaning"]["plan"]["numbers"] == ["age"]
    import json

    json.dumps(as_json)  # plain values only


def test_after_cleaning_only_a_numeric_column_with_a_few_stray_cells_is_an_error(mixed_frame):
    from stages.cleaning import clean_data

    n = len(mixed_frame)
    dose = [str(i % 9) for i in range(n)]
    dose[4], dose[20], dose[30] = "unknown", "<5", "?"  # '?' is a missing marker: 2 stray text cells of 59
    cleaned = clean_data(mixed_frame.assign(dose=dose), "label")
    with pytest.raises(DataError, match=r"column 'dose' mixes numbers and text \(57 numbers such as '0', 2 text values such as 'unknown'\)"):
        profile_data(cleaned.frame, "label", cleaning=cleaned.report)
    tickets = [str(113800 + i) if i % 4 else f"A/5 {21000 + i}" for i in range(n)]  # 75% numbers: a code
    cleaned = clean_data(mixed_frame.assign(ticket=tickets), "label")
    profile = profile_data(cleaned.frame, "label", cleaning=cleaned.report)
    assert "ticket" in profile.dropped  # every value different: ID-like text, as any such category
    shared = [t for t in tickets[: n // 2] for _ in (0, 1)]  # tickets shared by two passengers
    cleaned = clean_data(mixed_frame.assign(ticket=shared), "label")
    assert "ticket" in profile_data(cleaned.frame, "label", cleaning=cleaned.report).categorical_features
