"""The data contract a model keeps, the check of rows against it, and batch scoring.

The contract records, at training time, the columns a model needs, their kinds, the
categories it saw and each column's share of missing values; `check_rows` holds new rows
to it (missing or unknown columns, unseen categories, drift in missing values), and
`score` predicts on rows that passed, with probability columns for classifiers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stages.cleaning import CleaningPlan, CleaningReport, apply_cleaning
from stages.errors import DataError
from stages.fold_fits import predict_with_proba
from stages.preparation import conform_features
from stages.understanding import CATEGORICAL, NUMERIC, DataProfile

PREDICTION = "prediction"
PROBA_PREFIX = "proba_"
MAX_CONTRACT_CATEGORIES = 1000
"""A categorical column with more distinct values than this is not listed in the contract (and not checked for unseen ones)."""
CONTRACT_KEY = "crispml_contract"
"""The key of the data contract in an MLflow model's metadata (the `MLmodel` file) and in `manifest.json`."""
MISSING_DRIFT = 0.1
"""A column whose share of missing values exceeds the training share by more than this is reported..."""
MISSING_DRIFT_MIN_ROWS = 20
"""...in a batch of at least this many rows; in a smaller one, only missing values in a column that had none."""


@dataclass(frozen=True)
class ColumnContract:
    """What the model saw in one feature column during training.

    Attributes:
        name: Column name.
        kind: `numeric` or `categorical`.
        dtype: Its dtype in the training data, as text ("" when unknown).
        missing_share: Share of missing values in the labelled training rows (None when unknown).
        minimum: Smallest value seen (numeric columns; None when unknown).
        maximum: Largest value seen (numeric columns; None when unknown).
        categories: Every value seen (categorical columns), or None when there were more
            than `MAX_CONTRACT_CATEGORIES` or they are unknown.
    """

    name: str
    kind: str
    dtype: str = ""
    missing_share: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataContract:
    """The input a model expects, saved with it so that every scorer applies the same checks.

    Attributes:
        columns: The feature columns, in training order.
        target: The training target's name ("" when unknown).
        cleaning: How training read its raw data (`stages.cleaning`), applied to every batch
            before the checks; None for a model saved without one (rows are checked as given).
    """

    columns: tuple[ColumnContract, ...]
    target: str = ""
    cleaning: CleaningPlan | None = None

    @property
    def features(self) -> tuple[str, ...]:
        """Feature names, in training order."""
        return tuple(c.name for c in self.columns)

    @property
    def numeric(self) -> tuple[str, ...]:
        """The numeric features."""
        return tuple(c.name for c in self.columns if c.kind == NUMERIC)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The columns a raw batch needs: the features, with a date's calendar features given as the date column."""
        plan = self.cleaning
        return tuple(dict.fromkeys(plan.source_of(f) if plan else f for f in self.features))

    def to_dict(self) -> dict[str, Any]:
        """The contract as JSON- and YAML-friendly values."""
        columns = []
        for c in self.columns:
            entry = dataclasses.asdict(c)
            entry["categories"] = list(c.categories) if c.categories is not None else None
            columns.append(entry)
        out: dict[str, Any] = {"target": self.target, "columns": columns}
        if self.cleaning is not None:
            out["cleaning"] = self.cleaning.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> DataContract:
        """Read a contract written by `to_dict`.

        Args:
            raw: The plain values.

        Returns:
            The contract.

        Raises:
            ValueError: They do not describe a contract.
        """
        if not isinstance(raw, dict) or not isinstance(raw.get("columns"), list):
            raise ValueError("a data contract needs a 'columns' list")
        cleaning = CleaningPlan.from_dict(raw["cleaning"]) if raw.get("cleaning") is not None else None
        known = {f.name for f in dataclasses.fields(ColumnContract)}
        columns = []
        for entry in raw["columns"]:
            if not isinstance(entry, dict) or not {"name", "kind"} <= set(entry) or not set(entry) <= known:
                raise ValueError(f"malformed data contract column: {entry!r}")
            categories = entry.get("categories")
            columns.append(ColumnContract(**{**entry, "categories": tuple(map(str, categories)) if categories is not None else None}))
        return cls(columns=tuple(columns), target=str(raw.get("target", "")), cleaning=cleaning)


def build_contract(X: pd.DataFrame, profile: DataProfile) -> DataContract:
    """The data contract of a model trained on `X`: columns, dtypes, categories, ranges, missing shares,
    and how the raw data was read (the profile's cleaning plan).

    Args:
        X: The features of every labelled row, as `conform_features` returns them.
        profile: The data profile (training dtypes, and the cleaning report).

    Returns:
        The contract.
    """
    dtypes = {c.name: c.dtype for c in profile.columns}
    numeric = set(profile.numeric_features)
    columns = []
    for name in profile.features:
        values = X[name]
        present = values.dropna()
        missing = float(values.isna().mean()) if len(values) else 0.0
        if name in numeric:
            low, high = (float(present.min()), float(present.max())) if len(present) else (None, None)
            columns.append(ColumnContract(name, NUMERIC, dtypes.get(name, ""), missing, low, high))
        else:
            seen = sorted(map(str, present.unique()))
            listed = tuple(seen) if len(seen) <= MAX_CONTRACT_CATEGORIES else None
            columns.append(ColumnContract(name, CATEGORICAL, dtypes.get(name, ""), missing, categories=listed))
    plan = profile.cleaning.plan if profile.cleaning is not None else None
    return DataContract(columns=tuple(columns), target=profile.target, cleaning=plan)


def contract_from_signature(features: tuple[str, ...], numeric: tuple[str, ...]) -> DataContract:
    """A contract with names and kinds only, for a model saved without one.

    Args:
        features: Input column names.
        numeric: The numeric ones among them.

    Returns:
        A contract that checks columns and types but reports no drift.
    """
    return DataContract(columns=tuple(ColumnContract(f, NUMERIC if f in numeric else CATEGORICAL) for f in features))


@dataclass(frozen=True)
class ContractCheck:
    """Rows checked against a data contract: the model's input, and what was odd about them.

    Attributes:
        features: The feature columns, conformed to the training types, in the input's row order.
        ignored: Input columns the model does not use.
        unseen: `{column: rows}` with a category not seen in training.
        out_of_range: `{column: rows}` with a value outside the training range.
        missing: `{column: missing cells}`, for columns missing much more often than in training.
        warnings: One readable line per finding above, after the cleaning's own (markers, spaces...).
        cleaning: What the contract's cleaning plan did to the rows, or None without a plan.
    """

    features: pd.DataFrame
    ignored: tuple[str, ...] = ()
    unseen: dict[str, int] = field(default_factory=dict)
    out_of_range: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    cleaning: CleaningReport | None = None


def check_rows(data: pd.DataFrame, contract: DataContract, what: str = "the data to score") -> ContractCheck:
    """Check rows against a model's data contract, for batch scoring and for serving alike.

    The rows are first read as training read its raw data, by the contract's cleaning plan
    (missing markers, spaces, numbers with thousands separators, re-typed columns, dates
    expanded), so the raw file a model was trained on scores as it is.
    A missing column, text in a numeric column or an infinite value is an error: the model
    cannot score such a row. Extra columns, unseen categories, values outside the training
    range and unusually many missing values are scored (the preprocessor handles them) and
    reported. No row is dropped.

    Args:
        data: The rows. They are not modified.
        contract: The model's contract.
        what: What the rows are, for messages ("the data to score", "the request").

    Returns:
        The model's input and the findings.

    Raises:
        DataError: A feature column is missing, or a numeric one holds text or an infinite value.
    """
    features = contract.features
    raw_columns = data.columns
    absent = [c for c in contract.inputs if c not in raw_columns]
    if absent:
        raise DataError(
            f"{what} lacks {len(absent)} column(s) the model needs: {', '.join(absent)}; "
            f"add them (the model needs: {', '.join(contract.inputs)})"
        )
    # Only the model's inputs are read by the plan: other columns are carried through as they are, unread.
    cleaned = apply_cleaning(data.loc[:, list(contract.inputs)], contract.cleaning) if contract.cleaning is not None else None
    if cleaned is not None:
        data = cleaned.frame
    _check_numeric(data, contract, what)
    X = conform_features(data, features, contract.numeric)
    n = len(X)
    warnings: list[str] = list(cleaned.report.warnings) if cleaned is not None else []
    ignored = tuple(str(c) for c in raw_columns if c not in set(contract.inputs))
    if ignored:
        warnings.append(
            f"{len(ignored)} column(s) of {what} are not model inputs and are ignored for scoring: {', '.join(ignored)}"
        )
    unseen: dict[str, int] = {}
    out_of_range: dict[str, int] = {}
    missing: dict[str, int] = {}
    for column in contract.columns:
        values = X[column.name]
        if column.kind == NUMERIC and column.minimum is not None and column.maximum is not None:
            outside = (values < column.minimum) | (values > column.maximum)
            if outside.any():
                out_of_range[column.name] = int(outside.sum())
                warnings.append(
                    f"drift: column '{column.name}' has {int(outside.sum())} of {n} rows outside the training range "
                    f"[{column.minimum:g}, {column.maximum:g}] (e.g. {float(values[outside].iloc[0]):g}); they are scored"
                )
        if column.kind == CATEGORICAL and column.categories is not None:
            new = values.notna() & ~values.isin(column.categories)
            if new.any():
                unseen[column.name] = int(new.sum())
                warnings.append(
                    f"drift: column '{column.name}' has {int(new.sum())} of {n} rows with a category not seen in training "
                    f"(e.g. {values[new].iloc[0]!r}); they are scored as an unknown category"
                )
        n_missing = int(values.isna().sum())
        share = column.missing_share
        enough = n >= MISSING_DRIFT_MIN_ROWS or share == 0.0
        if n_missing and share is not None and enough and n_missing / n > share + MISSING_DRIFT:
            missing[column.name] = n_missing
            warnings.append(
                f"drift: column '{column.name}' is {n_missing / n:.0%} missing ({n_missing} of {n} rows) against "
                f"{column.missing_share:.0%} in training; the missing values are imputed"
            )
    return ContractCheck(X, ignored, unseen, out_of_range, missing, tuple(warnings), cleaned.report if cleaned else None)


def _check_numeric(data: pd.DataFrame, contract: DataContract, what: str) -> None:
    """Raise on text or an infinite value in a column the model reads as numbers (after the cleaning plan)."""
    for column in contract.columns:
        if column.kind != NUMERIC:
            continue
        raw = data[column.name]
        converted = pd.to_numeric(raw, errors="coerce")
        bad = (converted.isna() & raw.notna()).to_numpy()
        trained_as = f" (it was {column.dtype} in training)" if column.dtype else ""
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"column '{column.name}' must be numeric{trained_as} but {what} holds {_plain(raw.iloc[row])!r} "
                f"(row {row + 1}, {int(bad.sum())} such cells); fix or blank those cells"
            )
        infinite = np.isinf(converted.to_numpy(dtype=float, na_value=np.nan))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise DataError(
                f"column '{column.name}' of {what} holds an infinite value (row {row + 1}, {int(infinite.sum())} such cells); "
                "replace them with numbers or leave the cells empty"
            )


@dataclass(frozen=True)
class Scored:
    """Scored rows and what the contract check found.

    Attributes:
        frame: The input's rows, in order, plus `prediction` and `proba_<class>` columns.
        check: The contract check (warnings, drift counts).
    """

    frame: pd.DataFrame
    check: ContractCheck

    @property
    def warnings(self) -> tuple[str, ...]:
        """The contract check's warnings."""
        return self.check.warnings


def score(model: Any, data: pd.DataFrame, contract: DataContract) -> Scored:
    """Score rows: the input's columns plus `prediction` and, for a classifier, `proba_<class>`.

    Args:
        model: A fitted pipeline.
        data: Rows to score; extra columns are carried through, not used.
        contract: The model's data contract (`build_contract`), checked first.

    Returns:
        A new frame with exactly the input's rows, in order, and the check's findings.

    Raises:
        DataError: The rows already have a column named like an output column, so the
            output would lose it; or they break the contract (see `check_rows`).
    """
    classes = getattr(model, "classes_", None)
    probabilities = classes is not None and hasattr(model, "predict_proba")  # as `predict_with_proba` decides
    outputs = [PREDICTION, *(f"{PROBA_PREFIX}{c}" for c in (classes if probabilities else ()))]
    taken = [name for name in outputs if name in data.columns]
    if taken:
        raise DataError(
            f"the data to score already has {len(taken)} column(s) named like the columns scoring adds: "
            f"{', '.join(taken)}; rename or drop them, so the output keeps every input column as it is "
            f"and adds {', '.join(outputs)}"
        )
    check = check_rows(data, contract)
    pred, proba = predict_with_proba(model, check.features, classes)
    out = data.copy()
    out[PREDICTION] = pred
    if proba is not None and classes is not None:
        for i, c in enumerate(classes):
            out[f"{PROBA_PREFIX}{c}"] = proba[:, i]
    return Scored(frame=out, check=check)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
