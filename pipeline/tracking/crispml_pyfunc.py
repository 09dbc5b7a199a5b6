"""The `python_function` loader shipped inside every model crispml logs (as `code/crispml_pyfunc.py`).

It is copied into each model as one file and runs where crispml is not installed, so it
cannot import crispml: the few reading rules below (`_text_read`, `_as_text`, `_datetimes`,
the numeric check) restate `stages.cleaning` and `stages.contract.check_rows` on purpose,
and `tests/pipeline/tracking/test_crispml_pyfunc.py` checks that both read a messy raw file to the
same features. It lives with the rest of crispml's MLflow code: it is what MLflow calls to load the model.

Plain MLflow loads a crispml model through this file: `mlflow.pyfunc.load_model`,
`mlflow models serve`, and `crispml serve` (which runs MLflow's own scoring server). It
imports only numpy, pandas and MLflow, so no crispml needs to be installed where the model
is served. It makes every pyfunc scorer answer as `crispml predict` does:

- it takes the rows as pandas reads a file like the training file: an integer column as
  integers, or as floats once a value is missing; numbers written as text; the missing
  markers, spaces, thousands separators and dates that training's data step read (the
  cleaning plan in the model's data contract, `crispml_contract` in `MLmodel`);
- it returns one row per input row with the columns `prediction` and, for a classifier,
  `proba_<class>` for each class (the same values as `crispml predict`);
- a row it cannot score (a column missing, text in a numeric column, an infinite value) is
  refused with one line that names the column and the fix: an `MlflowException` whose
  message MLflow's scoring server returns as it is, in a 400, without a stack trace.

The model itself has no input schema in its signature: MLflow's schema types cannot say
"integer, or float when a value is missing" (it refuses int64 for a double column and
float64 for a long one), so the data contract is the schema, and this file enforces it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

CONTRACT_KEY = "crispml_contract"
PREDICTION = "prediction"
PROBA_PREFIX = "proba_"
_THOUSANDS = r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?"


class ContractError(MlflowException):
    """Rows that break the model's data contract: one line saying what is wrong and how to fix it.

    MLflow's scoring server rewrites the message of an `MlflowException` raised by a model to
    start with the whole request's data; this one keeps its first message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)  # a 400 from the scoring server

    @property
    def message(self) -> str:  # type: ignore[override]
        return self.__dict__["_crispml_message"]

    @message.setter
    def message(self, value: str) -> None:
        self.__dict__.setdefault("_crispml_message", value)


class ContractModel:
    """A fitted scikit-learn pipeline behind its data contract: MLflow's pyfunc `predict`."""

    def __init__(self, model: Any, contract: dict[str, Any]) -> None:
        self.model = model
        self.contract = contract

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """`prediction` and, for a classifier, `proba_<class>`: one row per input row, in order."""
        try:
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        except (ValueError, TypeError) as exc:
            raise ContractError(f"the input is not a table of named columns ({exc}); send rows with column names") from None
        X = conform(frame, self.contract)
        classes = getattr(self.model, "classes_", None)
        out = pd.DataFrame({PREDICTION: self.model.predict(X)})
        if classes is not None and hasattr(self.model, "predict_proba"):
            proba = self.model.predict_proba(X)
            for i, c in enumerate(classes):
                out[f"{PROBA_PREFIX}{c}"] = proba[:, i]
        return out

    def get_raw_model(self) -> Any:
        """The scikit-learn pipeline."""
        return self.model


def _load_pyfunc(path: str, model_config: Any = None) -> ContractModel:
    """MLflow's entry point: the model folder's scikit-learn pipeline and its data contract."""
    import mlflow.sklearn
    from mlflow.models import Model

    metadata = Model.load(os.path.join(path, "MLmodel")).metadata or {}
    raw = metadata.get(CONTRACT_KEY)
    contract = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(contract, dict) or not isinstance(contract.get("columns"), list):
        raise MlflowException(f"the model at {path} has no crispml data contract ({CONTRACT_KEY}) in its MLmodel file")
    return ContractModel(mlflow.sklearn.load_model(path), contract)


def inputs(contract: dict[str, Any]) -> list[str]:
    """The raw columns the model needs: its features, a date's calendar features given as the date column."""
    derived = {f"{d['name']}_{p}": d["name"] for d in _plan(contract).get("dates", []) for p in d.get("parts", [])}
    return list(dict.fromkeys(derived.get(c["name"], c["name"]) for c in contract["columns"]))


def conform(frame: pd.DataFrame, contract: dict[str, Any]) -> pd.DataFrame:
    """The model's input from raw rows: read as training read its file, checked, in training order and types.

    Raises:
        ContractError: A needed column is missing, or a numeric one holds text or an infinite value.
    """
    needed = inputs(contract)
    return _checked(_read_as_training(_needed_rows(frame, needed), needed, _plan(contract)), contract)


def _needed_rows(frame: pd.DataFrame, needed: list[str]) -> pd.DataFrame:
    """The columns the model reads, each once, by name; a missing or repeated one is refused."""
    names = [str(c) for c in frame.columns]
    absent = [c for c in needed if c not in names]
    if absent:
        raise ContractError(
            f"the input lacks {len(absent)} column(s) the model needs: {', '.join(absent)}; "
            f"add them (the model needs: {', '.join(needed)})"
        )
    dupes = sorted({n for n in needed if names.count(n) > 1})  # a repeated column the model does not read is let be
    if dupes:
        raise ContractError(f"the input has duplicate column names: {', '.join(dupes)}; rename them")
    return pd.DataFrame({n: frame.iloc[:, names.index(n)].to_numpy() for n in needed})


def _read_as_training(rows: pd.DataFrame, needed: list[str], plan: dict[str, Any]) -> dict[str, Any]:
    """Each column as training's data step read it: missing markers, numbers in text, thousands, dates, categories."""
    markers = set(plan.get("markers", []))
    numbers, thousands = set(plan.get("numbers", [])), set(plan.get("thousands", []))
    categorical = set(plan.get("categorical", []))
    dates = {d["name"]: d for d in plan.get("dates", []) if d.get("parts")}
    columns: dict[str, Any] = {}
    for name in needed:
        col = _text_read(rows[name], markers) if plan else rows[name]
        if name in dates:
            values = _datetimes(col, dates[name].get("format", ""))
            for part in dates[name]["parts"]:
                columns[f"{name}_{part}"] = getattr(values.dt, part).astype("float64")
            continue
        if name in numbers and not _is_numeric(col):
            text = col.astype("str")
            if name in thousands:
                separated = text.str.fullmatch(_THOUSANDS).fillna(False).to_numpy(dtype=bool)
                text = text.where(~separated, text.str.replace(",", "", regex=False))
            parsed = pd.to_numeric(text, errors="coerce")
            bad = (parsed.isna() & col.notna()).to_numpy()  # left as they are, for the numeric check to name
            col = parsed.astype(object).where(~bad, col) if bad.any() else parsed
        elif name in categorical:
            col = _as_text(col)
        columns[name] = col
    return columns


def _checked(columns: dict[str, Any], contract: dict[str, Any]) -> pd.DataFrame:
    """The model's input in training's column order and types; text or an infinite value in a numeric column is refused."""
    out = {}
    for spec in contract["columns"]:
        name, raw = spec["name"], columns[spec["name"]]
        if spec["kind"] == "numeric":
            values = pd.to_numeric(raw, errors="coerce")
            bad = (values.isna() & raw.notna()).to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ContractError(
                    f"column '{name}' must be numeric (it was {spec.get('dtype') or 'numeric'} in training) but the input "
                    f"holds {_plain(raw.iloc[row])!r} (row {row + 1}, {int(bad.sum())} such cells); fix or blank those cells"
                )
            floats = values.to_numpy(dtype="float64", na_value=np.nan)
            if np.isinf(floats).any():
                row = int(np.flatnonzero(np.isinf(floats))[0])
                raise ContractError(
                    f"column '{name}' of the input holds an infinite value (row {row + 1}); "
                    "replace it with a number or leave the cell empty"
                )
            out[name] = pd.Series(floats, name=name)
        else:
            out[name] = raw.astype(str).where(raw.notna(), np.nan)  # missing stays missing (pandas 2 writes "nan")
    X = pd.DataFrame(out)
    X.columns = pd.Index(list(out), dtype=object)
    return X


def _plan(contract: dict[str, Any]) -> dict[str, Any]:
    return contract.get("cleaning") or {}


def _text_read(col: pd.Series, markers: set[str]) -> pd.Series:
    """Text cells stripped of spaces, and the missing markers as missing (other cells as they are)."""
    if not (isinstance(col.dtype, pd.StringDtype) or col.dtype == object):
        return col
    is_text = col.map(lambda v: isinstance(v, str), na_action="ignore").fillna(False).to_numpy(dtype=bool)
    if not is_text.any():
        return col
    stripped = col.where(~is_text, col[is_text].str.strip()) if col.dtype == object else col.str.strip()
    return stripped.mask(is_text & _is_marker(stripped, markers).to_numpy(dtype=bool))


def _is_marker(col: pd.Series, markers: set[str]) -> pd.Series:
    return col.map(lambda v: isinstance(v, str) and v.strip().lower() in markers, na_action="ignore").fillna(False).astype(bool)


def _datetimes(col: pd.Series, fmt: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        return col
    if isinstance(col.dtype, pd.PeriodDtype):
        return col.dt.to_timestamp()
    text = col.astype("str")
    try:
        values = pd.to_datetime(text, format=fmt or None, errors="coerce", utc="%z" in fmt)
    except (ValueError, TypeError):  # mixed time zones in text read without a format
        values = pd.to_datetime(text, format=fmt or None, errors="coerce", utc=True)
    unread = values.isna() & col.notna()
    if fmt and unread.any():  # a date sent as ISO text (JSON has no dates: 2021-03-04T00:00:00), as crispml reads it
        values = values.where(~unread, pd.to_datetime(text.where(unread), format="ISO8601", errors="coerce", utc="%z" in fmt))
    return values


def _as_text(col: pd.Series) -> pd.Series:
    """Values as text, whole numbers written as a file would (`113803`, not `113803.0`); missing stays missing."""

    if _is_numeric(col):
        values = col.to_numpy(dtype=float, na_value=np.nan)
        whole = np.isfinite(values) & (values == np.round(values))
        text = [str(int(v)) if w else (None if np.isnan(v) else repr(float(v))) for v, w in zip(values, whole)]
        return pd.Series(text, index=col.index, name=col.name, dtype="str")

    def written(value: Any) -> str:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value)

    return col.map(written, na_action="ignore").astype("str")


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
