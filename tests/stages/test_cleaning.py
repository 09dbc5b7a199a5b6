"""The data step: missing markers, stray spaces, numbers and dates in text, and a saved plan that scoring applies."""

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.files import read_table
from stages.cleaning import CleaningPlan, apply_cleaning, clean_data, number_mask
from stages.dates import DateColumn


def test_common_missing_markers_are_read_as_missing_and_counted():
    markers = ["?", "NA", "N/A", "null", "-", "", "  ", "Null", "n/a", " ? "]
    frame = pd.DataFrame({"code": [*markers, "NAB", "?x", "a-b", "ok"]})
    cleaned = clean_data(frame)
    assert cleaned.frame["code"].isna().sum() == len(markers)
    assert list(cleaned.frame["code"].dropna()) == ["NAB", "?x", "a-b", "ok"]  # values that only contain a marker stay
    assert [(c.column, c.cells) for c in cleaned.report.missing] == [("code", len(markers))]
    assert any(w.startswith(f"read {len(markers)} cells as missing") and "'code' 10" in w for w in cleaned.report.warnings)


def test_a_numeric_column_with_markers_is_read_as_numbers():
    frame = pd.DataFrame({"age": ["31", "?", "45", "-", "NA", "27.5"]})
    cleaned = clean_data(frame)
    assert cleaned.frame["age"].dtype == "float64"
    assert cleaned.frame["age"].dropna().tolist() == [31.0, 45.0, 27.5]
    assert cleaned.report.plan.numbers == ("age",)


def test_csv_and_parquet_text_columns_read_alike(tmp_path):
    raw = pd.DataFrame(
        {"x": ["1", "?", "3,000", " 4 "], "colour": ["red ", "null", "-", "blue"], "y": ["a", "b", " a", "b "]}
    ).astype("str")
    raw.to_csv(tmp_path / "t.csv", index=False)
    raw.to_parquet(tmp_path / "t.parquet", index=False)
    from_csv = clean_data(read_table(tmp_path / "t.csv"), "y").frame
    from_parquet = clean_data(read_table(tmp_path / "t.parquet"), "y").frame
    pd.testing.assert_frame_equal(from_csv, from_parquet)
    assert from_csv["x"].tolist()[2:] == [3000.0, 4.0] and from_csv["colour"].isna().sum() == 2
    assert sorted(from_csv["y"].unique()) == ["a", "b"]


def test_thousands_separators_are_read_where_the_whole_column_matches():
    frame = pd.DataFrame({"income": ["3,750", "-1,234.5", "12", "1,000,000"], "lists": ["1,2", "3,750", "5", "6"]})
    cleaned = clean_data(frame)
    assert cleaned.frame["income"].tolist() == [3750.0, -1234.5, 12.0, 1_000_000.0]
    assert cleaned.report.plan.thousands == ("income",)
    assert [(c.column, c.cells, c.example) for c in cleaned.report.thousands] == [("income", 3, "'3,750'")]
    assert cleaned.frame["lists"].tolist() == ["1,2", "3,750", "5", "6"]  # one '1,2' and the column is not numbers


@pytest.mark.parametrize("values", [["3,75", "2,5", "1,25"], ["1234,567", "12,345"], ["1,2,3", "4,5,6"]])
def test_decimal_commas_and_lists_are_not_read_as_numbers(values):
    cleaned = clean_data(pd.DataFrame({"v": values}))
    assert cleaned.frame["v"].tolist() == values and not cleaned.report.plan.numbers


def test_spaces_around_text_are_stripped_in_features_and_the_target():
    frame = pd.DataFrame({"colour": ["red ", " red", "blue", "blue"], "y": ["yes", " yes", "yes ", "no"]})
    cleaned = clean_data(frame, "y")
    assert cleaned.frame["colour"].tolist() == ["red", "red", "blue", "blue"]
    assert cleaned.frame["y"].nunique() == 2
    assert {c.column: c.cells for c in cleaned.report.stripped} == {"colour": 2, "y": 2}


def test_a_ticket_code_column_becomes_a_category_with_a_warning():
    tickets = ["A/5 21171", "113803", "PC 17599", "373450", "330877", "17463", "349909", "STON/O2. 3101282"]
    cleaned = clean_data(pd.DataFrame({"ticket": tickets}))  # 5 of 8 numbers: 62%
    assert cleaned.report.plan.categorical == ("ticket",)
    assert cleaned.frame["ticket"].tolist() == tickets
    [retyped] = cleaned.report.retyped
    assert (retyped.numbers, retyped.text) == (5, 3)
    assert any("column 'ticket' mixes numbers and text (5 numbers such as '113803'" in w and "used as a category" in w for w in cleaned.report.warnings)


@pytest.mark.parametrize(
    ("numbers", "text", "categorical"),
    [(9, 1, False), (18, 2, False), (17, 3, True), (5, 5, True), (4, 6, False)],
)
def test_the_stray_text_threshold_is_ten_percent(numbers, text, categorical):
    # At most 10% text cells: a numeric column with stray entries, left for understanding to report.
    # More: a category. Under half numbers: an ordinary text column, not reported as re-typed.
    values = [str(i) for i in range(numbers)] + [f"t{i}" for i in range(text)]
    cleaned = clean_data(pd.DataFrame({"v": values}))
    assert (cleaned.report.plan.categorical == ("v",)) is categorical
    assert cleaned.frame["v"].tolist() == values  # never altered
    assert not cleaned.report.plan.numbers


def test_text_dates_become_calendar_features():
    frame = pd.DataFrame({"day": ["2021-03-01", "2021-12-25", "?", "2022-07-04"], "x": [1, 2, 3, 4]})
    cleaned = clean_data(frame)
    assert list(cleaned.frame.columns) == ["day_year", "day_month", "day_dayofweek", "x"]  # in the date's place
    assert cleaned.frame["day_month"].tolist()[:2] == [3.0, 12.0]
    assert cleaned.frame["day_dayofweek"].tolist()[:2] == [0.0, 5.0]  # Monday, Saturday
    assert cleaned.frame.loc[2].isna().sum() == 3
    assert cleaned.report.plan.dates == (DateColumn("day", "%Y-%m-%d", ("year", "month", "dayofweek")),)
    assert any("date column 'day' became calendar features day_year, day_month, day_dayofweek" in w for w in cleaned.report.warnings)


def test_the_target_is_never_expanded_or_retyped():
    frame = pd.DataFrame({"y": ["2021-03-01", "2021-03-02", "2021-03-03"], "z": ["1", "2", "x"]})
    plan = clean_data(frame, "y").report.plan
    assert not plan.dates
    assert not clean_data(frame, "z").report.plan.categorical


def test_columns_kept_as_text_are_stripped_but_not_parsed():
    frame = pd.DataFrame({"zip": ["10115", "?", " 20095"], "d": ["2021-01-01"] * 3})
    cleaned = clean_data(frame, keep_text=("zip", "d"))
    assert cleaned.frame["zip"].tolist()[::2] == ["10115", "20095"] and cleaned.frame["zip"].isna().sum() == 1
    assert list(cleaned.frame.columns) == ["zip", "d"]


def test_cleaning_never_modifies_its_input():
    frame = pd.DataFrame({"a": [" x", "?"], "d": ["2021-01-01", "2021-01-02"], "n": ["1,000", "2,000"]})
    before = frame.copy()
    clean_data(frame)
    pd.testing.assert_frame_equal(frame, before)


def test_a_saved_plan_reads_new_rows_as_training_did():
    train = pd.DataFrame({"n": ["1,000", "2"], "t": ["A1", "7"] * 1, "d": ["2021-01-01", "2021-06-01"]})
    plan = CleaningPlan.from_dict(clean_data(train).report.plan.to_dict())
    new = pd.DataFrame({"n": ["3,500", "heavy"], "t": [113803, 7], "d": ["2021-02-01", "not a date"]})
    cleaned = apply_cleaning(new, plan)
    assert cleaned.frame["n"].tolist() == [3500.0, "heavy"]  # left as it is, for the contract's check to name
    assert cleaned.frame["t"].tolist() == ["113803", "7"]  # numbers as a file writes them, not '113803.0'
    assert cleaned.frame["d_month"].tolist()[0] == 2.0 and np.isnan(cleaned.frame["d_month"].tolist()[1])
    assert [(c.column, c.cells) for c in cleaned.report.unparsed] == [("d", 1)]
    assert any("1 cells of date column 'd' did not read as dates" in w for w in cleaned.report.warnings)


def test_the_plan_survives_its_plain_form_and_refuses_a_malformed_one():
    plan = CleaningPlan(numbers=("a", "b"), thousands=("b",), categorical=("c",), dates=(DateColumn("d", "%Y", ("year",)),))
    assert CleaningPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ValueError, match="malformed cleaning plan"):
        CleaningPlan.from_dict({"dates": [{"name": "d"}]})
    with pytest.raises(ValueError, match="malformed cleaning plan"):
        CleaningPlan.from_dict({"bogus": 1})


def test_duplicate_column_names_are_an_error():
    with pytest.raises(DataError, match="duplicate column names: a; rename them"):
        apply_cleaning(pd.DataFrame([[1, 2]], columns=["a", "a"]), CleaningPlan())


def test_number_mask_reads_numbers_as_a_data_file_means_them():
    values = pd.Series(["12", " -1.5 ", "1e3", "1_000", "True", "x"], dtype=object)
    assert number_mask(values).tolist() == [True, True, True, False, False, False]
    assert number_mask(pd.Series([True, False])).tolist() == [False, False]
    assert number_mask(pd.Series([1.5, 2.0])).tolist() == [True, True]
