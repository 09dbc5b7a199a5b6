"""Date columns in text: which columns are dates, the format they are read in, and the calendar parts they become."""

import pandas as pd
import pytest

from stages.cleaning import clean_data
from stages.dates import DateColumn, as_datetime, date_column, date_format


def test_an_hour_feature_is_made_only_when_a_value_has_a_time():
    stamps = pd.to_datetime(["2021-03-01 00:00", "2021-03-02 14:30", "2021-03-03 09:00"])
    with_time = clean_data(pd.DataFrame({"t": stamps}))
    assert with_time.frame["t_hour"].tolist() == [0.0, 14.0, 9.0]
    midnight = clean_data(pd.DataFrame({"t": stamps.normalize()}))
    assert list(midnight.frame.columns) == ["t_year", "t_month", "t_dayofweek"]


def test_day_first_dates_are_read_day_first():
    cleaned = clean_data(pd.DataFrame({"d": ["01/02/2021", "13/02/2021", "25/12/2021"]}))
    assert cleaned.report.plan.dates[0].format == "%d/%m/%Y"
    assert cleaned.frame["d_month"].tolist() == [2.0, 2.0, 12.0]


@pytest.mark.parametrize(
    ("values", "is_date"),
    [
        (["20210301", "20211225", "20220704"], False),  # plain numbers: read as numbers, not dates
        (["Jan", "Feb", "Mar"], False),  # month names: no year, no day
        (["2021-03"] * 3, False),  # no day
        ([*(f"2021-01-{d:02d}" for d in range(1, 20)), "soon"], True),  # 95% read as dates: a date column
        ([*(f"2021-01-{d:02d}" for d in range(1, 19)), "soon", "later"], False),  # 90%: not
    ],
)
def test_a_date_column_has_full_dates_in_nearly_every_cell(values, is_date):
    assert bool(clean_data(pd.DataFrame({"v": values})).report.plan.dates) is is_date


def test_a_text_column_is_dates_only_when_nearly_every_value_reads_in_one_format():
    fmt, values = date_format(pd.Series(["2021-03-04", "2021-12-25", "2022-07-04"]))
    assert fmt == "%Y-%m-%d" and values.dt.month.tolist() == [3, 12, 7]
    assert date_format(pd.Series(["red", "blue", "green"])) == ("", None)
    assert date_format(pd.Series([*(f"2021-01-{d:02d}" for d in range(1, 19)), "soon", "later"])) == ("", None)


def test_a_date_written_as_iso_text_still_reads_and_garbage_is_missing():
    # JSON carries a date as ISO text with a time, whatever format the training file used.
    values = as_datetime(pd.Series(["2021-03-04", "2021-03-05T10:30:00", "not a date", None]), "%Y-%m-%d")
    assert values.tolist()[:2] == [pd.Timestamp("2021-03-04"), pd.Timestamp("2021-03-05 10:30")]
    assert values.isna().tolist() == [False, False, True, True]


def test_periods_read_as_their_start_and_mixed_utc_offsets_in_utc():
    months = pd.Series(pd.period_range("2021-01", periods=3, freq="M"))
    assert as_datetime(months, "").tolist() == [pd.Timestamp("2021-01-01"), pd.Timestamp("2021-02-01"), pd.Timestamp("2021-03-01")]
    stamps = as_datetime(pd.Series(["2021-03-04 10:00+01:00", "2021-03-04 10:00+02:00"]), "%Y-%m-%d %H:%M%z")
    assert stamps.dt.hour.tolist() == [9, 8]  # one column, in UTC


def test_a_derived_name_that_the_data_already_has_is_left_out():
    values = as_datetime(pd.Series(["2021-03-04 10:00", "2021-03-05 00:00"]), "%Y-%m-%d %H:%M")
    column = date_column("d", "%Y-%m-%d %H:%M", values, taken={"d", "d_month"})
    assert column == DateColumn("d", "%Y-%m-%d %H:%M", ("year", "dayofweek", "hour"))  # a time of day: an hour part
    assert column.features == ("d_year", "d_dayofweek", "d_hour")
    assert date_column("d", "%Y", pd.Series([pd.NaT, pd.NaT]), set()).parts == ("year", "month", "dayofweek")
