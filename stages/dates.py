"""Date columns in text: detecting their format, parsing them, and the calendar parts a model can use.

A text column whose values (nearly all) parse with one date format becomes a `DateColumn`:
it is parsed with that format (never guessed per value), and expanded into year, month and
day of week (and hour, when the values carry a time), which models can learn from; the
raw text would be an ID-like category.
"""

from __future__ import annotations

import re
import warnings as _warnings
from dataclasses import dataclass

import pandas as pd
from pandas.tseries.api import guess_datetime_format

DATE_MIN_SHARE = 0.95
"""A text column is a date column when at least this share of its values read as dates in
the format of its first values (the others become missing, and are counted)."""
DATE_PARTS = ("year", "month", "dayofweek")
HOUR = "hour"
_DATE_SAMPLE = 200
_DATE_GUESSES = 20
_FULL_DATE = re.compile(r"(?=.*%[dj])(?=.*%[mbB])(?=.*%[Yy])")


@dataclass(frozen=True)
class DateColumn:
    """A date column and the calendar features it becomes.

    Attributes:
        name: The source column.
        format: The `strftime` format its text was read with ("" for a datetime dtype).
        parts: The features made: some of `year`, `month`, `dayofweek`, `hour`.
    """

    name: str
    format: str
    parts: tuple[str, ...]

    @property
    def features(self) -> tuple[str, ...]:
        """The derived column names, `<name>_<part>`."""
        return tuple(f"{self.name}_{part}" for part in self.parts)


def date_format(present: pd.Series) -> tuple[str, pd.Series | None]:
    """The format of a text column's dates and the dates read in it, when nearly every value
    reads as a full date (day, month and year) in one format guessed from its first values;
    else `("", None)`."""
    formats = dict.fromkeys(_guess_format(v) for v in present.drop_duplicates().head(_DATE_GUESSES))
    candidates = [f for f in formats if f and _FULL_DATE.match(f)]
    if not candidates:
        return "", None
    sample = present.head(_DATE_SAMPLE)
    shares = {f: float(as_datetime(sample, f).notna().mean()) for f in candidates}
    fmt = max(candidates, key=shares.__getitem__)  # "01/02/2013" guesses month first; "13/01/2013" tells
    if shares[fmt] < DATE_MIN_SHARE:
        return "", None
    values = as_datetime(present, fmt)
    return (fmt, values) if values.notna().mean() >= DATE_MIN_SHARE else ("", None)


def _guess_format(value: str) -> str | None:
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # "parsing dates in %d/%m/%Y format when dayfirst=False"
        try:
            return guess_datetime_format(value)
        except (ValueError, TypeError, OverflowError):
            return None


def date_column(name: str, fmt: str, values: pd.Series, taken: set[str]) -> DateColumn:
    present = values.dropna()
    parts = list(DATE_PARTS)
    if len(present) and bool((present != present.dt.normalize()).any()):
        parts.append(HOUR)
    # A derived name that an input column already has is left out rather than overwrite it.
    return DateColumn(name, fmt, tuple(p for p in parts if f"{name}_{p}" not in taken))


def is_datetime(col: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(col) or isinstance(col.dtype, pd.PeriodDtype)


def as_datetime(col: pd.Series, fmt: str) -> pd.Series:
    """Values as datetimes: a datetime dtype as is, a period as its start, text read in `fmt` (unreadable cells missing)."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return col
    if isinstance(col.dtype, pd.PeriodDtype):
        return col.dt.to_timestamp()
    text = as_str(col)
    utc = "%z" in fmt  # mixed UTC offsets cannot share one column otherwise; calendar features are then in UTC
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # "could not infer format" for a datetime-dtype plan
        try:
            values = pd.to_datetime(text, format=fmt or None, errors="coerce", utc=utc)
        except (ValueError, TypeError):  # mixed time zones in text read without a format
            values = pd.to_datetime(text, format=fmt or None, errors="coerce", utc=True)
    unread = values.isna() & col.notna()
    if fmt and unread.any():  # a date written as ISO text (2021-03-04T00:00:00, as JSON carries a date)
        values = values.where(~unread, pd.to_datetime(text.where(unread), format="ISO8601", errors="coerce", utc=utc))
    return values


def calendar_part(values: pd.Series, part: str) -> pd.Series:
    return getattr(values.dt, part).astype("float64")


def as_str(col: pd.Series) -> pd.Series:
    return col if isinstance(col.dtype, pd.StringDtype) else col.astype("str")
