"""Phase 1, understanding: the data step, reading real files as they come: missing markers, stray spaces, numbers, dates.

`clean_data` decides a `CleaningPlan` from each column's own values and applies it;
`apply_cleaning` applies a saved plan to new rows, so that scoring reads a raw file exactly
as training did. The rules:

- a text cell that is, once stripped and lower-cased, one of `MISSING_MARKERS` (`?`, `NA`,
  `N/A`, `null`, `-`, blank...) is missing;
- spaces around text are stripped (`'yes '` is `yes`), in every text column, the target too;
- a text column whose every value is a number is read as numbers; one written with
  thousands separators (`3,750`, `-1,234.5`) too, when every value matches the strict pattern;
- a text column that is mostly numbers but more than `MAX_STRAY_TEXT_SHARE` text (a ticket
  code such as `113803`, `A/5 21171`) is a category; one with fewer text cells is left as it
  is, for data understanding to report as a numeric column with stray entries;
- a date column (a datetime dtype, or text of which nearly every value reads as a date) is
  replaced by calendar features `<col>_year`, `<col>_month`, `<col>_dayofweek`, and
  `<col>_hour` when any value has a time of day.

None of these looks at the target's relation to a column, so deciding them on the whole
file before the holdout split leaks nothing. The target itself gets the first three rules
only (it is never expanded or re-typed). Inputs are never modified.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stages.dates import DateColumn, as_datetime, as_str, calendar_part, date_column, date_format, is_datetime
from stages.errors import DataError

MISSING_MARKERS: tuple[str, ...] = (
    "", "?", "-", "na", "n/a", "nan", "null", "none",
    "#n/a", "#n/a n/a", "#na", "<na>", "-nan", "1.#ind", "1.#qnan", "-1.#ind", "-1.#qnan",
)  # fmt: skip
"""Text that means "missing", compared after stripping spaces and lower-casing: the brief's
common markers plus every default missing marker of `pandas.read_csv`, so that a Parquet
file and a CSV file read alike."""
MAX_STRAY_TEXT_SHARE = 0.1
"""A text column whose values are numbers except for at most this share of text cells is a
numeric column with stray entries (`n/a`, `<5`, `unknown`): data understanding stops with an
error naming them, for the user to fix. With more text cells it is a code (a ticket number
such as `113803` beside `A/5 21171`) and is used as a category."""
MIXED_MIN_NUMBER_SHARE = 0.5
"""A category at least this share numbers is reported as re-typed (it looks numeric but is
used as a category); below it, it is a text column where a few codes happen to be digits."""
_SHOWN_COLUMNS = 8
# Written out with [0-9] (not \d, which is every Unicode digit in Python but ASCII in pyarrow).
_NUMBER = r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity))"
"""A number as a data file means it (what `float` reads, without `1_000` or non-ASCII digits), as a regex: matched
column-wide by pyarrow in a fraction of the time `pd.to_numeric` takes to fail on text."""
_THOUSANDS = r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?"
_THOUSANDS_OR_PLAIN = rf"(?:{_THOUSANDS}|[+-]?[0-9]+(?:\.[0-9]+)?)"


@dataclass(frozen=True)
class CleaningPlan:
    """What to do to each column, decided at training from its values and saved with the model.

    Attributes:
        markers: Text read as missing (stripped, lower-cased), in every text column.
        numbers: Text columns read as numbers.
        thousands: Those among `numbers` written with thousands separators.
        categorical: Mostly-numeric columns used as categories (their values as text).
        dates: Date columns, each replaced by its calendar features.
    """

    markers: tuple[str, ...] = MISSING_MARKERS
    numbers: tuple[str, ...] = ()
    thousands: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    dates: tuple[DateColumn, ...] = ()

    def source_of(self, column: str) -> str:
        """The input column a cleaned column comes from (itself, or the date it was derived from)."""
        for d in self.dates:
            if column in d.features:
                return d.name
        return column

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON- and YAML-friendly values."""
        return {
            "markers": list(self.markers),
            "numbers": list(self.numbers),
            "thousands": list(self.thousands),
            "categorical": list(self.categorical),
            "dates": [{"name": d.name, "format": d.format, "parts": list(d.parts)} for d in self.dates],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> CleaningPlan:
        """Read a plan written by `to_dict`.

        Args:
            raw: The plain values.

        Returns:
            The plan.

        Raises:
            ValueError: They do not describe a plan.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(raw, dict) or not set(raw) <= known:
            raise ValueError(f"malformed cleaning plan: {raw!r}")
        try:
            dates = tuple(
                DateColumn(str(d["name"]), str(d["format"]), tuple(map(str, d["parts"]))) for d in raw.get("dates", [])
            )
            lists = {k: tuple(map(str, raw.get(k, []))) for k in ("numbers", "thousands", "categorical")}
            markers = tuple(map(str, raw.get("markers", MISSING_MARKERS)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed cleaning plan ({exc!r}): {raw!r}") from None
        return cls(markers=markers, dates=dates, **lists)


@dataclass(frozen=True)
class ColumnCount:
    """Cells of one column that a rule changed.

    Attributes:
        column: The column.
        cells: How many cells.
        example: One of them as it was in the input (repr), or "".
    """

    column: str
    cells: int
    example: str = ""


@dataclass(frozen=True)
class Retyped:
    """A mostly-numeric column used as a category.

    Attributes:
        column: The column.
        numbers: Its values that are numbers.
        text: Its other values.
        number_example: One number (repr).
        text_example: One text value (repr).
    """

    column: str
    numbers: int
    text: int
    number_example: str
    text_example: str


@dataclass(frozen=True)
class CleaningReport:
    """What reading the data did, column by column.

    Attributes:
        plan: The plan applied.
        missing: Cells read as missing, per column, with the commonest marker.
        stripped: Cells whose surrounding spaces were stripped (and that are not missing).
        thousands: Cells read as numbers once their thousands separators were removed.
        retyped: Mostly-numeric columns used as categories (when the plan was decided).
        expanded: Date columns turned into calendar features (when the plan was decided).
        unparsed: Cells of date columns that did not read as dates (now missing), per column.
    """

    plan: CleaningPlan
    missing: tuple[ColumnCount, ...] = ()
    stripped: tuple[ColumnCount, ...] = ()
    thousands: tuple[ColumnCount, ...] = ()
    retyped: tuple[Retyped, ...] = ()
    expanded: tuple[DateColumn, ...] = ()
    unparsed: tuple[ColumnCount, ...] = ()

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per rule that changed something, with its counts."""
        out = []
        if self.missing:
            total = sum(c.cells for c in self.missing)
            out.append(
                f"read {total} cells as missing (markers such as '?', 'NA', '-', blank): "
                + _listed(f"'{c.column}' {c.cells} (e.g. {c.example})" for c in self.missing)
            )
        if self.stripped:
            total = sum(c.cells for c in self.stripped)
            out.append(
                f"stripped spaces around {total} text cells (e.g. {self.stripped[0].example}): "
                + _listed(f"'{c.column}' {c.cells}" for c in self.stripped)
            )
        if self.thousands:
            total = sum(c.cells for c in self.thousands)
            out.append(
                f"read {total} cells with thousands separators as numbers: "
                + _listed(f"'{c.column}' {c.cells} (e.g. {c.example})" for c in self.thousands)
            )
        for r in self.retyped:
            out.append(
                f"column '{r.column}' mixes numbers and text ({r.numbers} numbers such as {r.number_example}, "
                f"{r.text} text values such as {r.text_example}): used as a category; if it is numeric, "
                "fix or blank the text cells"
            )
        unparsed = {c.column: c for c in self.unparsed if c.cells}
        for d in self.expanded:
            failed = unparsed.pop(d.name, None)
            note = f"; {failed.cells} cells did not read as dates (e.g. {failed.example}) and are missing" if failed else ""
            out.append(f"date column '{d.name}' became calendar features {', '.join(d.features)}{note}")
        for c in unparsed.values():
            out.append(f"{c.cells} cells of date column '{c.column}' did not read as dates (e.g. {c.example}) and are missing")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly values: `{rule: {column: count}}` and the plan."""
        return {
            "missing_markers": {c.column: c.cells for c in self.missing},
            "stripped_spaces": {c.column: c.cells for c in self.stripped},
            "read_as_numbers": list(self.plan.numbers),
            "thousands_separators": {c.column: c.cells for c in self.thousands},
            "retyped_as_categorical": {r.column: {"numbers": r.numbers, "text": r.text} for r in self.retyped},
            "dates_expanded": {d.name: list(d.features) for d in self.expanded},
            "dates_unparsed": {c.column: c.cells for c in self.unparsed if c.cells},
        }


@dataclass(frozen=True)
class Cleaned:
    """Rows as the pipeline reads them, and what reading them did.

    Attributes:
        frame: A new frame: markers missing, text stripped, numbers parsed, dates expanded.
        report: What was done, with counts.
    """

    frame: pd.DataFrame
    report: CleaningReport


def clean_data(data: pd.DataFrame, target: str = "", keep_text: tuple[str, ...] = ()) -> Cleaned:
    """Decide the cleaning plan from the columns' values, and apply it.

    Args:
        data: The whole data set, target included. It is not modified.
        target: The target column: stripped, markers read as missing, numbers parsed, but
            never expanded or re-typed.
        keep_text: Columns to keep as text whatever their values (`data.categorical`):
            stripped and markers read as missing, nothing more.

    Returns:
        The cleaned frame and the report (whose `plan` is what scoring applies).
    """
    plan = plan_cleaning(data, target, keep_text)
    cleaned = apply_cleaning(data, plan)
    retyped = tuple(_retyped(cleaned.frame[c], c) for c in plan.categorical)
    return Cleaned(cleaned.frame, dataclasses.replace(cleaned.report, retyped=retyped, expanded=plan.dates))


def plan_cleaning(data: pd.DataFrame, target: str = "", keep_text: tuple[str, ...] = ()) -> CleaningPlan:
    """Decide what to do to each column, from its values alone.

    Args:
        data: The data. It is not modified.
        target: The target column (never expanded or re-typed).
        keep_text: Columns kept as text whatever their values.

    Returns:
        The plan.
    """
    numbers: list[str] = []
    thousands: list[str] = []
    categorical: list[str] = []
    dates: list[DateColumn] = []
    taken = set(map(str, data.columns))
    for name in data.columns:
        col = data[name]
        if name in keep_text:
            continue
        if name != target and is_datetime(col):
            dates.append(date_column(str(name), "", as_datetime(col, ""), taken))
            continue
        text, _, _ = _normalise_text(col, MISSING_MARKERS)
        if text is None:
            continue
        present = as_str(text.dropna())
        if present.empty:
            continue
        numeric, separators = _number_mask(present)
        share = float(numeric.mean())
        if share == 1.0:
            numbers.append(name)
            if separators:
                thousands.append(name)
        elif name == target or share >= 1 - MAX_STRAY_TEXT_SHARE:
            continue  # a numeric column with stray entries: data understanding names them
        elif share >= MIXED_MIN_NUMBER_SHARE:
            categorical.append(name)
        else:
            fmt, values = date_format(present)
            if fmt:
                dates.append(date_column(str(name), fmt, values, taken))
    return CleaningPlan(
        numbers=tuple(numbers),
        thousands=tuple(thousands),
        categorical=tuple(categorical),
        dates=tuple(d for d in dates if d.parts),
    )


def apply_cleaning(data: pd.DataFrame, plan: CleaningPlan) -> Cleaned:
    """Apply a plan to rows: at training right after it is decided, and to every batch scored.

    Columns the plan names but the rows lack are skipped (the data contract's check names
    them). At scoring, a cell of a number column that does not read as a number is left as
    it is, for the contract's check to report; a date cell that does not read as a date is missing.

    Args:
        data: The rows. They are not modified.
        plan: The plan (`plan_cleaning`, or the one saved with a model).

    Returns:
        The cleaned frame and the counts of what was done.
    """
    if data.columns.has_duplicates:
        dupes = ", ".join(dict.fromkeys(map(str, data.columns[data.columns.duplicated()])))
        raise DataError(f"the data has duplicate column names: {dupes}; rename them")
    # Only the columns that change are replaced, in a shallow copy: the others share the
    # input's memory (copy-on-write), so a wide file is not copied whole.
    frame = data.copy(deep=False)
    missing, stripped, separated, unparsed = [], [], [], []
    numbers, thousands, categorical = set(plan.numbers), set(plan.thousands), set(plan.categorical)
    dates = {d.name: d for d in plan.dates if d.parts}
    for name in data.columns:
        col = data[name]
        text, n_missing, n_stripped = _normalise_text(col, plan.markers)
        if n_missing[0]:
            missing.append(ColumnCount(str(name), n_missing[0], n_missing[1]))
        if n_stripped[0]:
            stripped.append(ColumnCount(str(name), n_stripped[0], n_stripped[1]))
        changed = text is not None and (n_missing[0] or n_stripped[0])
        col = text if changed else col
        if name in dates:
            values = as_datetime(col, dates[name].format)
            bad = (values.isna() & col.notna()).to_numpy()
            unparsed.append(ColumnCount(str(name), int(bad.sum()), repr(_plain(col[bad].iloc[0])) if bad.any() else ""))
            at = frame.columns.get_loc(name)
            frame = frame.drop(columns=name)
            for i, (part, feature) in enumerate(zip(dates[name].parts, dates[name].features)):
                frame.insert(at + i, feature, calendar_part(values, part).array)
            continue
        if name in numbers and not _is_numeric(col):
            col, count = _to_numbers(col, name in thousands)
            changed = True
            if count.cells:
                separated.append(dataclasses.replace(count, column=str(name)))
        elif name in categorical:
            col, changed = _as_text(col), True
        if changed:
            frame[name] = col.array  # by position: a repeated row label cannot misalign rows
    report = CleaningReport(plan, tuple(missing), tuple(stripped), tuple(separated), unparsed=tuple(unparsed))
    return Cleaned(frame, report)


def number_mask(values: pd.Series) -> np.ndarray:
    """Which values are numbers, as a data file means them (`12`, `-1.5`, `1e3`; not `1_000`, `True`).

    Args:
        values: Values without missing ones, of any dtype.

    Returns:
        A boolean array, one entry per value.
    """
    if pd.api.types.is_bool_dtype(values):
        return np.zeros(len(values), dtype=bool)
    if _is_numeric(values):
        return np.ones(len(values), dtype=bool)
    return _number_mask(as_str(values).str.strip())[0]


def _number_mask(text: pd.Series) -> tuple[np.ndarray, bool]:
    """Numbers among stripped text values, and whether the whole column is numbers written with thousands separators."""
    plain = text.str.fullmatch(_NUMBER).to_numpy(dtype=bool)
    if plain.all() or not text.str.contains(",", regex=False).any():
        return plain, False
    grouped = text.str.fullmatch(_THOUSANDS_OR_PLAIN).to_numpy(dtype=bool)
    if grouped.all():
        return grouped, True
    return plain, False


def _to_numbers(col: pd.Series, thousands: bool) -> tuple[pd.Series, ColumnCount]:
    """Text read as numbers; cells that do not read stay as they are (for the contract's check to name)."""
    text = as_str(col)
    separated = text.str.fullmatch(_THOUSANDS).fillna(False).to_numpy(dtype=bool) if thousands else np.zeros(len(col), bool)
    if separated.any():
        text = text.where(~separated, text.str.replace(",", "", regex=False))
    parsed = pd.to_numeric(text, errors="coerce")
    bad = (parsed.isna() & col.notna()).to_numpy()
    if bad.any():
        parsed = parsed.astype(object).where(~bad, col)
    example = repr(_plain(col[separated].iloc[0])) if separated.any() else ""
    return parsed.rename(col.name), ColumnCount("", int(separated.sum()), example)


def _normalise_text(col: pd.Series, markers: tuple[str, ...]) -> tuple[pd.Series | None, tuple[int, str], tuple[int, str]]:
    """Strip the text cells of a column and read its markers as missing.

    Returns:
        The new column (None when the column holds no text), `(cells read as missing, the
        commonest marker)` and `(cells stripped but not missing, an example)`.
    """
    if isinstance(col.dtype, pd.StringDtype):
        is_text = col.notna().to_numpy()
    elif col.dtype == object:
        is_text = col.map(lambda v: isinstance(v, str), na_action="ignore").fillna(False).to_numpy(dtype=bool)
    else:
        return None, (0, ""), (0, "")
    if not is_text.any():
        return None, (0, ""), (0, "")
    stripped = col.str.strip()
    marker = is_text & stripped.str.lower().isin(markers).to_numpy(dtype=bool)
    changed = is_text & ~marker & (stripped != col).fillna(False).to_numpy(dtype=bool)
    out = col.where(~is_text, stripped) if col.dtype == object else stripped
    if marker.any():
        out = out.mask(marker)
    common = repr(_plain(col[marker].value_counts().index[0])) if marker.any() else ""
    example = repr(_plain(col[changed].iloc[0])) if changed.any() else ""
    return out, (int(marker.sum()), common), (int(changed.sum()), example)


def _retyped(col: pd.Series, name: str) -> Retyped:
    present = col.dropna()
    numeric = number_mask(present)
    return Retyped(
        str(name),
        int(numeric.sum()),
        int((~numeric).sum()),
        repr(_plain(present[numeric].iloc[0])) if numeric.any() else "",
        repr(_plain(present[~numeric].iloc[0])) if (~numeric).any() else "",
    )


def _as_text(col: pd.Series) -> pd.Series:
    """Values as text, numbers written as a file would (`113803`, not `113803.0`); missing stays missing."""
    if _is_numeric(col):
        values = col.to_numpy(dtype=float, na_value=np.nan)
        whole = np.isfinite(values) & (values == np.round(values))
        text = [str(int(v)) if w else (None if np.isnan(v) else repr(float(v))) for v, w in zip(values, whole)]
        return pd.Series(text, index=col.index, name=col.name, dtype="str")
    if isinstance(col.dtype, pd.StringDtype):
        return col
    return col.map(_written, na_action="ignore").astype("str")


def _written(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _listed(items: Any) -> str:
    items = list(items)
    more = f" and {len(items) - _SHOWN_COLUMNS} more columns" if len(items) > _SHOWN_COLUMNS else ""
    return ", ".join(items[:_SHOWN_COLUMNS]) + more
