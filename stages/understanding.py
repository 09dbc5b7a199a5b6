"""Phase 1, business and data understanding (CRISP-DM's first two): what is the task, what is in the data.

`profile_data` checks the target, detects the task, and profiles every column: its kind,
missing share and cardinality, and whether it is dropped (constant, empty, ID-like) and why.
It also flags features that alone predict the target almost perfectly (a possible leak).
It profiles the data as `stages.cleaning` read it, and carries that step's report.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stages.cleaning import MAX_STRAY_TEXT_SHARE, CleaningReport, number_mask
from stages.errors import DataError, did_you_mean
from stages.leaks import LEAK_NOTE, leak_notes

REGRESSION = "regression"
BINARY = "binary"
MULTICLASS = "multiclass"
TASKS = (REGRESSION, BINARY, MULTICLASS)
CLASSIFICATION = (BINARY, MULTICLASS)

NUMERIC = "numeric"
CATEGORICAL = "categorical"
OTHER = "other"

MAX_CLASSES_FOR_NUMERIC_TARGET = 10
"""A numeric target with integer values and at most this many distinct values is a class label."""
HIGH_MISSING_SHARE = 0.5
HIGH_CARDINALITY = 50
MIN_ROWS_FOR_ID = 20
"""Unique integers that run consecutively, or in a column with an ID-like name, are a row number or key from this many rows."""
MIN_ROWS_FOR_VALUE_ID = 100
"""Unique integers with neither are an ID only from this many rows, and only when a
measurement over their range would repeat (`ID_MIN_EXPECTED_REPEATS`). Below it, a table is
often one row per entity or per year, where unique values are by design (a population, a
year built): dropping such a real feature would cost more than keeping a key."""
ID_MIN_EXPECTED_REPEATS = 5.0
"""Unique integers are a key when a measurement over the same range would be expected to
repeat at least this often. n values drawn at random from a range of m integers repeat
about n(n-1)/2m times, and at least as often from any non-uniform distribution (uniform
draws collide least), so all n being unique has probability below exp(-5), under 1%, for
a measurement: they were made unique on purpose."""
_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|key)$", re.IGNORECASE)
_ID_BY_VALUES = "ID-like by its values"
_UNUSABLE = "not usable as a feature"
_NESTED_TYPES = {
    "lists": (list, tuple, set, frozenset, np.ndarray),  # a Parquet list, or a map (read as a list of pairs)
    "structs or maps": (dict,),
    "bytes": (bytes, bytearray, memoryview),  # binary that `pipeline.files.read_table` could not read as UTF-8 text
}
"""Values of an object column that no model can use: such a column is dropped, such a target refused."""


@dataclass(frozen=True)
class ColumnProfile:
    """What one column holds and what the pipeline does with it.

    Attributes:
        name: Column name.
        dtype: pandas dtype, as text.
        kind: `numeric`, `categorical` or `other`.
        missing_share: Share of missing cells.
        n_unique: Distinct non-missing values.
        dropped: Why the column is not used as a feature; empty when it is used.
        notes: Things worth a look that do not drop the column.
    """

    name: str
    dtype: str
    kind: str
    missing_share: float
    n_unique: int
    dropped: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataProfile:
    """The result of data understanding.

    Attributes:
        source: Where the data came from (for messages).
        n_rows: Rows in the data, including rows with a missing target.
        n_columns: Columns in the data, including the target.
        target: The target column.
        task: `regression`, `binary` or `multiclass`.
        task_detected: True when the task was detected, False when the config named it.
        target_missing: Rows whose target is missing (dropped before training).
        columns: One profile per column other than the target.
        class_balance: `(class, rows)` pairs for classification, most frequent first.
        target_summary: Distribution summary for regression (count, mean, std, quantiles).
        warnings: Things a person should look at.
        cleaning: What reading the data did (`stages.cleaning`), or None when it was profiled as given.
    """

    source: str
    n_rows: int
    n_columns: int
    target: str
    task: str
    task_detected: bool
    target_missing: int
    columns: tuple[ColumnProfile, ...]
    class_balance: tuple[tuple[str, int], ...] = ()
    target_summary: tuple[tuple[str, float], ...] = ()
    warnings: tuple[str, ...] = ()
    cleaning: CleaningReport | None = None

    @property
    def features(self) -> tuple[str, ...]:
        """The columns used as features, in data order."""
        return tuple(c.name for c in self.columns if not c.dropped)

    @property
    def numeric_features(self) -> tuple[str, ...]:
        """The numeric feature columns."""
        return tuple(c.name for c in self.columns if not c.dropped and c.kind == NUMERIC)

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """The categorical feature columns."""
        return tuple(c.name for c in self.columns if not c.dropped and c.kind == CATEGORICAL)

    @property
    def dropped(self) -> dict[str, str]:
        """`{column: reason}` for the columns not used as features."""
        return {c.name: c.dropped for c in self.columns if c.dropped}

    @property
    def leaks(self) -> dict[str, str]:
        """`{column: note}` for the features flagged as a possible target leak."""
        return {c.name: n for c in self.columns if not c.dropped for n in c.notes if n.startswith(LEAK_NOTE)}

    def data_step(self) -> dict[str, Any]:
        """What the data step did, as JSON-friendly values, for the model card and `--json`.

        Returns:
            `missing_markers`, `stripped_spaces`, `thousands_separators` (`{column: cells}`),
            `read_as_numbers`, `retyped_as_categorical`, `dates_expanded`, `dates_unparsed`,
            `dropped` (`{column: reason}`) and `flagged` (`{column: why}`, possible leaks).
        """
        out = self.cleaning.to_dict() if self.cleaning is not None else {}
        return {**out, "dropped": self.dropped, "flagged": self.leaks}

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-friendly values, with the data step's report (`cleaning`)."""
        out = dataclasses.asdict(dataclasses.replace(self, cleaning=None))
        out["class_balance"] = dict(self.class_balance)
        out["target_summary"] = dict(self.target_summary)
        out["features"] = list(self.features)
        out["cleaning"] = (
            {**self.cleaning.to_dict(), "plan": self.cleaning.plan.to_dict()} if self.cleaning is not None else None
        )
        return out

    def to_markdown(self) -> str:
        """A readable summary: the data, the target, and one table row per column."""
        lines = [
            f"# Data understanding: {self.source}",
            "",
            f"- rows: {self.n_rows}, columns: {self.n_columns}",
            f"- target: `{self.target}`, task: **{self.task}** ({'detected' if self.task_detected else 'from config'})",
            f"- rows with a missing target (dropped): {self.target_missing}",
            f"- features used: {len(self.features)} ({len(self.numeric_features)} numeric, "
            f"{len(self.categorical_features)} categorical); dropped: {len(self.dropped)}",
        ]
        if self.class_balance:
            total = sum(n for _, n in self.class_balance)
            balance = ", ".join(f"{c}: {n} ({n / total:.0%})" for c, n in self.class_balance)
            lines.append(f"- class balance: {balance}")
        if self.target_summary:
            lines.append("- target: " + ", ".join(f"{k} {v:.4g}" for k, v in self.target_summary))
        if self.warnings:
            lines += ["", "## Warnings", "", *(f"- {w}" for w in self.warnings)]
        lines += [
            "",
            "## Columns",
            "",
            "| column | dtype | kind | missing | distinct | used | notes |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.columns:
            used = "dropped: " + c.dropped if c.dropped else "yes"
            lines.append(
                f"| {c.name} | {c.dtype} | {c.kind} | {c.missing_share:.1%} | {c.n_unique} | {used} | {'; '.join(c.notes)} |"
            )
        return "\n".join(lines) + "\n"


def detect_task(y: pd.Series) -> str:
    """Detect the task from a target column.

    Text, boolean and categorical targets are classification; so are numeric targets with
    integer values and at most `MAX_CLASSES_FOR_NUMERIC_TARGET` distinct values. Any other
    numeric target is regression.

    Args:
        y: The target, missing values allowed.

    Returns:
        `regression`, `binary` or `multiclass`.
    """
    values = y.dropna()
    n_unique = values.nunique()
    if _is_numeric(values) and not (_integer_valued(values) and n_unique <= MAX_CLASSES_FOR_NUMERIC_TARGET):
        return REGRESSION
    return BINARY if n_unique <= 2 else MULTICLASS


def profile_data(
    data: pd.DataFrame,
    target: str,
    task: str = "auto",
    source: str = "the data",
    categorical: tuple[str, ...] = (),
    cleaning: CleaningReport | None = None,
    seed: int = 0,
) -> DataProfile:
    """Check the target, settle the task, and profile every column.

    Args:
        data: The whole data set, target included, as `stages.cleaning.clean_data` returns
            it (or as given). It is not modified.
        target: The target column.
        task: `auto` to detect, or the task the business goal names.
        source: Where the data came from, for messages (a file name).
        categorical: Columns to use as categories whatever their values (codes that look
            like numbers, or numbers and text mixed on purpose).
        cleaning: The report of the cleaning that made `data`; its warnings come first.
        seed: Seed of the leak check's row sample and tie-breaks.

    Returns:
        The profile.

    Raises:
        DataError: The target is absent, empty or constant; it does not fit the named task;
            a column named in `categorical` is absent; a feature holds infinite values, or
            numbers with a few stray text cells; or no usable feature is left.
    """
    labelled = _labelled_target(data, target, source)
    y = data[target]
    detected = detect_task(y)
    task_detected = task == "auto"
    if task_detected:
        task = detected
    else:
        _check_task_fits(y, task, detected, target, source)

    absent = [c for c in categorical if c not in data.columns]
    if absent:
        hints = "".join(did_you_mean(c, map(str, data.columns)) for c in absent[:1])
        raise DataError(
            f"data.categorical names {', '.join(absent)}, not in {source}{hints}; "
            f"name columns of the data (columns: {', '.join(map(str, data.columns))})"
        )
    columns = tuple(
        _profile_column(data[c], str(c), len(data), c in categorical) for c in data.columns if c != target
    )
    _check_finite(data, columns, source)
    _check_mixed(data, [c for c in columns if c.name not in categorical], source)
    warnings: list[str] = list(cleaning.warnings) if cleaning is not None else []
    n_missing = int(y.isna().sum())
    if n_missing:
        warnings.append(f"{n_missing} rows with a missing target '{target}' are dropped")
    if not any(not c.dropped for c in columns):
        reasons = "; ".join(f"'{c.name}': {c.dropped}" for c in columns) or "the target is the only column"
        raise DataError(f"no usable feature column is left in {source} ({reasons}); add feature columns to the data")
    notes = leak_notes(data, {c.name: c.kind == NUMERIC for c in columns if not c.dropped}, target, task in CLASSIFICATION, seed)
    columns = tuple(dataclasses.replace(c, notes=(*c.notes, notes[c.name])) if c.name in notes else c for c in columns)
    warnings += _column_warnings(columns)
    balance, summary, imbalance = _target_summary(labelled, task)
    warnings += imbalance
    return DataProfile(
        source=source,
        n_rows=len(data),
        n_columns=data.shape[1],
        target=target,
        task=task,
        task_detected=task_detected,
        target_missing=n_missing,
        columns=columns,
        class_balance=balance,
        target_summary=summary,
        warnings=tuple(warnings),
        cleaning=cleaning,
    )


def _labelled_target(data: pd.DataFrame, target: str, source: str) -> pd.Series:
    """The target's labelled values, once the target is known to be there, predictable, not constant and finite."""
    if target not in data.columns:
        raise DataError(
            f"column '{target}' named as target is not in {source}{did_you_mean(target, map(str, data.columns))} "
            f"(columns: {', '.join(map(str, data.columns))}); pass the right name with --target"
        )
    labelled = data[target].dropna()
    nested = _nested_values(labelled)
    if nested:
        example = labelled.iloc[0].tolist() if isinstance(labelled.iloc[0], np.ndarray) else labelled.iloc[0]
        raise DataError(
            f"target '{target}' in {source} holds {nested}, such as {_show(example)}, which crispml cannot "
            "predict; choose a column of labels or numbers with --target"
        )
    if labelled.empty:
        raise DataError(f"target '{target}' in {source} has no values (every row is missing); choose another --target")
    if labelled.nunique() < 2:
        raise DataError(
            f"target '{target}' in {source} is constant (every row is {_show(labelled.iloc[0])}); "
            "there is nothing to predict; choose another --target"
        )
    if _is_numeric(labelled):
        infinite = np.isinf(labelled.to_numpy(dtype=float))
        if infinite.any():
            row = int(labelled.index[np.flatnonzero(infinite)[0]]) + 1 if isinstance(labelled.index, pd.RangeIndex) else "?"
            raise DataError(
                f"target '{target}' in {source} has {int(infinite.sum())} infinite values (first at row {row}); "
                "replace them with numbers or leave the cells empty (such rows are then dropped)"
            )
    return labelled


def _column_warnings(columns: tuple[ColumnProfile, ...]) -> list[str]:
    """What the profile says about the columns: dropped ones, mostly missing, high cardinality, possible leaks."""
    warnings: list[str] = []
    for c in columns:
        if c.dropped.startswith(_ID_BY_VALUES):
            warnings.append(f"column '{c.name}' is dropped as {c.dropped}")
        if _UNUSABLE in c.dropped:
            warnings.append(f"column '{c.name}' is dropped: {c.dropped}")
        if not c.dropped and c.missing_share > HIGH_MISSING_SHARE:
            warnings.append(f"column '{c.name}' is {c.missing_share:.0%} missing; its values are imputed")
        if not c.dropped and c.kind == CATEGORICAL and c.n_unique > HIGH_CARDINALITY:
            warnings.append(
                f"column '{c.name}' has {c.n_unique} distinct values (high cardinality): only its most frequent "
                "values get their own one-hot column (at most preparation.max_categories); the rest are grouped "
                "as 'infrequent', so memory stays bounded"
            )
        for note in c.notes:
            if note.startswith(LEAK_NOTE):
                warnings.append(f"column '{c.name}': {note}")
    return warnings


def _target_summary(labelled: pd.Series, task: str) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, float], ...], list[str]]:
    """The class balance (classification) or the target's summary (regression), and a warning on a rare class."""
    warnings: list[str] = []
    balance: tuple[tuple[str, int], ...] = ()
    summary: tuple[tuple[str, float], ...] = ()
    if task in CLASSIFICATION:
        counts = labelled.astype(str).value_counts()
        balance = tuple((str(k), int(v)) for k, v in counts.items())
        minority = counts.iloc[-1] / counts.sum()
        if minority < 0.05:
            warnings.append(
                f"class '{counts.index[-1]}' is only {minority:.1%} of labelled rows; prefer balanced_accuracy, f1_macro or roc_auc"
            )
    else:
        described = pd.to_numeric(labelled).describe()
        summary = tuple((str(k), float(v)) for k, v in described.items())
    return balance, summary, warnings


def _check_task_fits(y: pd.Series, task: str, detected: str, target: str, source: str) -> None:
    values = y.dropna()
    example = values.iloc[0]
    if task == REGRESSION and not _is_numeric(values):
        raise DataError(
            f"target '{target}' in {source} holds text (e.g. {_show(example)}) but the task is regression; "
            f"use --task {detected} (or auto)"
        )
    if task in CLASSIFICATION and _is_numeric(values) and not _integer_valued(values):
        fractional = values[values != np.round(values)].iloc[0]
        raise DataError(
            f"target '{target}' in {source} looks continuous ({values.nunique()} distinct values, e.g. {_show(fractional)}) "
            f"but the task is {task}; use --task regression (or auto)"
        )
    n_classes = values.nunique()
    if task == BINARY and n_classes != 2:
        raise DataError(
            f"target '{target}' in {source} has {n_classes} classes but the task is binary; use --task {detected} (or auto)"
        )
    if task == MULTICLASS and n_classes < 3:
        raise DataError(
            f"target '{target}' in {source} has only {n_classes} classes but the task is multiclass; use --task binary (or auto)"
        )


def _profile_column(col: pd.Series, name: str, n_rows: int, categorical: bool = False) -> ColumnProfile:
    present = col.dropna()
    nested = _nested_values(present)
    if nested:  # a Parquet list, struct, map or binary column: unhashable, or not text
        base = {"name": name, "dtype": str(col.dtype), "missing_share": float(col.isna().mean()), "n_unique": 0}
        why = f"{nested}, {_UNUSABLE}; to use it, turn it into columns of numbers or text"
        return ColumnProfile(kind=OTHER, dropped=why, **base)
    n_unique = int(present.nunique())
    missing = float(col.isna().mean()) if n_rows else 0.0
    base = {"name": name, "dtype": str(col.dtype), "missing_share": missing, "n_unique": n_unique}
    if pd.api.types.is_datetime64_any_dtype(col) or isinstance(col.dtype, pd.PeriodDtype):
        return ColumnProfile(kind=OTHER, dropped="date/time: not used; derive numeric features (year, month...) from it", **base)
    kind = NUMERIC if _is_numeric(col) and not categorical else CATEGORICAL
    if present.empty:
        return ColumnProfile(kind=kind, dropped="empty: every value is missing", **base)
    if n_unique == 1:
        return ColumnProfile(kind=kind, dropped=f"constant: every value is {_show(present.iloc[0])}", **base)
    every_value_unique = n_unique == len(present) and len(present) >= MIN_ROWS_FOR_ID
    if every_value_unique and kind == CATEGORICAL:
        return ColumnProfile(kind=kind, dropped="ID-like: every value is different", **base)
    if every_value_unique and _integer_valued(present):
        span = float(present.max()) - float(present.min()) + 1
        if span == len(present) or _ID_NAME.search(name):
            return ColumnProfile(kind=kind, dropped="ID-like: unique integers (a row number or key)", **base)
        n = len(present)
        repeats = n * (n - 1) / (2 * span)
        if n >= MIN_ROWS_FOR_VALUE_ID and repeats >= ID_MIN_EXPECTED_REPEATS:
            why = (
                f"{_ID_BY_VALUES}: {n} unique integers within a range of {span:.0f}, where a measurement "
                f"would repeat about {repeats:.0f} times (a key)"
            )
            return ColumnProfile(kind=kind, dropped=why, **base)
    notes = []
    if kind == CATEGORICAL and n_unique > HIGH_CARDINALITY:
        notes.append(f"high cardinality ({n_unique} distinct): rare values are grouped, one-hot columns are capped")
    return ColumnProfile(kind=kind, notes=tuple(notes), **base)


def _check_finite(data: pd.DataFrame, columns: tuple[ColumnProfile, ...], source: str) -> None:
    problems = []
    for c in columns:
        if c.kind != NUMERIC or c.dropped:
            continue
        values = data[c.name].to_numpy(dtype=float, na_value=np.nan)
        bad = np.isinf(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            problems.append(f"column '{c.name}' has {int(bad.sum())} infinite values (first at row {row + 1}: {values[row]})")
    if problems:
        raise DataError(f"{'; '.join(problems)} in {source}; replace them with numbers or leave the cells empty")


def _check_mixed(data: pd.DataFrame, columns: list[ColumnProfile], source: str) -> None:
    """Stop on a numeric column with a few stray text cells (at most `MAX_STRAY_TEXT_SHARE`): the user should fix them."""
    problems = []
    for c in columns:
        if c.kind != CATEGORICAL or c.dropped or _is_numeric(data[c.name]) or pd.api.types.is_bool_dtype(data[c.name]):
            continue
        present = data[c.name].dropna()
        is_number = pd.Series(number_mask(present), index=present.index)
        n_numbers = int(is_number.sum())
        if 0 < n_numbers < len(present) and n_numbers >= (1 - MAX_STRAY_TEXT_SHARE) * len(present):
            number, text = present[is_number].iloc[0], present[~is_number].iloc[0]
            problems.append(
                f"column '{c.name}' mixes numbers and text ({n_numbers} numbers such as {_show(number)}, "
                f"{len(present) - n_numbers} text values such as {_show(text)})"
            )
    if problems:
        raise DataError(
            f"{'; '.join(problems)} in {source}; if the column is numeric, fix or blank the text cells; "
            "if it is a category, list it in data.categorical in the config"
        )


def _nested_values(values: pd.Series) -> str:
    """What a column of Python objects holds that is not a value a model can use ("lists", "bytes"...), or ""."""
    if values.dtype != object or values.empty:
        return ""
    types = set(values.map(type))
    found = [what for what, kinds in _NESTED_TYPES.items() if any(issubclass(t, kinds) for t in types)]
    if "bytes" in found:
        found[found.index("bytes")] = "bytes that are not UTF-8 text"
    return f"nested or binary values ({', '.join(found)})" if found else ""


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _integer_valued(values: pd.Series) -> bool:
    if not _is_numeric(values):
        return False
    v = values.dropna().to_numpy(dtype=float)
    return bool(np.all(np.isfinite(v)) and np.all(v == np.round(v)))


def _show(value: object) -> str:
    """A value as a user would write it: `1`, `'text'` (not `np.int64(1)`)."""
    return repr(value.item() if isinstance(value, np.generic) else value)
