"""Scoring requests, read as MLflow's scoring protocol defines them, into the rows they hold.

`crispml serve` takes what MLflow's scoring server takes (`mlflow.pyfunc.scoring_server`):
a body of `text/csv`, `application/vnd.apache.parquet`, or `application/json` holding
exactly one of `dataframe_split`, `dataframe_records`, `instances` or `inputs` (and
optionally `params`). Every layout is read into one table, so that every request meets
the same data-contract check; anything that does not read as a table of named columns
holding one number, text or null per cell is a `RequestError` with the HTTP status to
answer and one line that says what is wrong and how to send it instead.

How the layouts are read (as MLflow reads them, except where noted):

- `dataframe_split`: `{"columns": [...], "data": [[...], ...]}` (an `index` is ignored).
  The columns are required, and every row holds one value per column. (pandas, and so
  MLflow, pads a short row with missing values when others are full: refused here.)
- `dataframe_records`, and `instances` or `inputs` holding a list of objects: one object
  per row; a key a row lacks is a missing cell, as an empty cell of a CSV file is.
- `instances` or `inputs` holding an object: one list of values per column (or one value
  per column, for one row).
- A list of lists (rows without column names) is refused, as MLflow's signature check
  refuses it for a model with named columns; a list of plain values is the one column of
  a model that has a single input column, as for MLflow.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataError, did_you_mean
from stages.contract import DataContract

CSV = "text/csv"
JSON = "application/json"
PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = (JSON, CSV, PARQUET)
SPLIT = "dataframe_split"
RECORDS = "dataframe_records"
INSTANCES = "instances"
INPUTS = "inputs"
LAYOUTS = (SPLIT, RECORDS, INSTANCES, INPUTS)
PARAMS = "params"
ACCEPTED = (
    f"{JSON} (an object holding one of {', '.join(LAYOUTS)}), {CSV} (a header row and data rows) or {PARQUET}"
)
"""What a request may be, for messages."""
EXAMPLE = '{"dataframe_records": [{"column": value, ...}, ...]}'
_NESTED = (list, tuple, dict, set, bytes, bytearray, np.ndarray)
_UTF8_BOM = b"\xef\xbb\xbf"
_GZIP = b"\x1f\x8b"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
MAX_COLUMNS = 10_000
"""The most columns a request may have (or twice the model's inputs, if more): pandas spends
about 0.1 ms on each column it builds, so a wide header of short names would hold the server
for minutes; the model reads only its inputs."""


class RequestError(DataError):
    """A scoring request that cannot be read as rows; `status` is the HTTP status to answer.

    Args:
        message: What is wrong and how to send it instead.
        status: 400 for a body that is not a table, 415 for a content type or encoding
            the server does not read, 413 for a body over the size limit.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ScoringRequest:
    """The rows of a scoring request as they were sent, before the data contract is applied.

    Attributes:
        frame: The rows, with the column names and the values as sent.
        mime: The media type they came as (`CSV`, `JSON` or `PARQUET`).
        params: A JSON request's `params`, for the model, or None.
    """

    frame: pd.DataFrame
    mime: str
    params: dict[str, Any] | None = None


def media_type(content_type: str | None, content_encoding: str | None = None) -> str:
    """The media type of a request, if the server reads it.

    Args:
        content_type: The Content-Type header, or None when there is none.
        content_encoding: The Content-Encoding header, or None.

    Returns:
        One of `CONTENT_TYPES`.

    Raises:
        RequestError: (415) No Content-Type, another media type, a charset other than UTF-8,
            a parameter MLflow does not read, or a compressed body.
    """
    if content_encoding is not None and content_encoding.strip().lower() not in ("", "identity"):
        raise RequestError(
            f"Content-Encoding '{content_encoding}' is not accepted: the server reads bodies as sent; "
            "send the body uncompressed, without a Content-Encoding header",
            415,
        )
    if content_type is None or not content_type.strip():
        raise RequestError(f"the request has no Content-Type header; send one of: {ACCEPTED}", 415)
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    if mime not in CONTENT_TYPES:
        hint = did_you_mean(mime, CONTENT_TYPES)
        raise RequestError(f"Content-Type '{content_type}' is not accepted{hint}; send one of: {ACCEPTED}", 415)
    for parameter in filter(None, parameters):
        key, _, value = (p.strip() for p in parameter.partition("="))
        if key.lower() != "charset":
            raise RequestError(
                f"Content-Type '{content_type}' has a parameter the server does not read ({key}); "
                f"drop it (a JSON body names its layout itself: one of {', '.join(LAYOUTS)})",
                415,
            )
        if value.strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(
                f"Content-Type '{content_type}' names charset {value}: the server reads UTF-8 only; "
                "send the body as UTF-8 (charset=utf-8)",
                415,
            )
    return mime


def read_request(
    body: bytes, content_type: str | None, contract: DataContract, content_encoding: str | None = None
) -> ScoringRequest:
    """Read a scoring request's rows, in whichever format and layout MLflow's server accepts.

    Args:
        body: The request body.
        content_type: Its Content-Type header, or None when there is none.
        contract: The model's data contract: which columns are inputs, and which are numeric.
        content_encoding: Its Content-Encoding header, or None.

    Returns:
        The rows as sent, and the request's `params`.

    Raises:
        RequestError: The request is not a table of named columns with one number, text or
            null per input cell (400), or its content type is not read here (415).
    """
    mime = media_type(content_type, content_encoding)
    if not body.strip():
        raise RequestError(f"the request body is empty; send the rows to score as {ACCEPTED}")
    params = None
    limit = _Columns(max(MAX_COLUMNS, 2 * len(contract.inputs)), len(contract.inputs))
    if mime == CSV:
        frame = _csv_frame(body, limit)
    elif mime == PARQUET:
        frame = _parquet_frame(body, limit)
    else:
        payload = _json_object(body)
        params = _params(payload)
        frame = _json_frame(payload, contract, limit)
    if len(frame) == 0:
        raise RequestError("the request holds no rows; send at least one row to score")
    dupes = [str(c) for c, n in Counter(map(str, frame.columns)).items() if n > 1]
    if dupes:
        raise RequestError(f"the request has duplicate column names: {', '.join(dupes)}; rename them")
    _check_cells(frame, contract)
    return ScoringRequest(frame=frame, mime=mime, params=params)


def split_body(frame: pd.DataFrame, params: dict[str, Any] | None = None) -> bytes:
    """A JSON request holding `frame` as `dataframe_split` (missing values as null), and `params`.

    Args:
        frame: The rows to send on: the checked (and cleaned) rows.
        params: The request's `params`, kept, or None.

    Returns:
        The body, UTF-8.
    """
    cells = frame.astype(object)
    rows = cells.where(frame.notna().to_numpy(), None).to_numpy(dtype=object).tolist()  # exact floats; null for missing
    payload: dict[str, Any] = {SPLIT: {"columns": [str(c) for c in frame.columns], "data": rows}}
    if params is not None:
        payload[PARAMS] = params
    return json.dumps(payload, allow_nan=False, default=_jsonable).encode("utf-8")


def without_bom(body: bytes) -> bytes:
    """A body without the UTF-8 byte-order mark some editors write first (MLflow reads it into the first column's name)."""
    return body.removeprefix(_UTF8_BOM)


@dataclass(frozen=True)
class _Columns:
    """The most columns a request may have, and how many the model reads (for the message)."""

    most: int
    inputs: int

    def check(self, n: int) -> None:
        if n > self.most:
            raise RequestError(
                f"the request has {n:,} columns, over the server's limit of {self.most:,} "
                f"(the model reads {self.inputs}); send only the columns the model needs"
            )


def _csv_frame(body: bytes, limit: _Columns) -> pd.DataFrame:
    text = _utf8(body).removeprefix("\ufeff")
    header = next(csv.reader(io.StringIO(text)), [])  # pandas renames a repeated name (`a`, `a.1`) silently
    limit.check(len(header))
    dupes = [c for c, n in Counter(header).items() if n > 1]
    if dupes:
        raise RequestError(f"the request has duplicate column names: {', '.join(dupes)}; rename them")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise RequestError("the CSV request has no header row; send a header row and data rows") from None
    except pd.errors.ParserError as exc:
        raise RequestError(
            f"the CSV request is not well-formed ({str(exc).strip()}); every row needs as many fields as the header"
        ) from None
    if len(frame.columns) == 1:
        name = str(frame.columns[0])
        for separator, called in ((";", "';'"), ("\t", "tabs")):
            if separator in name:
                raise RequestError(
                    f"the CSV request has one column, named {name[:80]!r}: it seems to use {called} between fields; "
                    "send comma-separated values"
                )
    return frame


def _parquet_frame(body: bytes, limit: _Columns) -> pd.DataFrame:
    import pyarrow.parquet

    try:
        limit.check(len(pyarrow.parquet.read_schema(io.BytesIO(body)).names))
        return pd.read_parquet(io.BytesIO(body))
    except RequestError:
        raise
    except Exception as exc:  # pyarrow raises many types for bytes that are not Parquet
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RequestError(
            f"the request body is not a Parquet file ({type(exc).__name__}: {message[:200]}); "
            "send a file written by DataFrame.to_parquet, or use another content type"
        ) from None


def _utf8(body: bytes) -> str:
    if body.startswith(_GZIP):
        raise RequestError("the request body is gzip-compressed; send it uncompressed, as UTF-8 text")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"the request body is not UTF-8 (byte {exc.object[exc.start]:#x} at offset {exc.start}); send UTF-8 text"
        ) from None


def _json_object(body: bytes) -> dict[str, Any]:
    text = _utf8(body).removeprefix("\ufeff")
    try:
        payload = json.loads(text, object_pairs_hook=_unique_keys)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError(f"the JSON body nests too deeply to read; send a table: {EXAMPLE}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON ({exc}); send an object such as {EXAMPLE}") from None
    except ValueError as exc:  # Python reads no integer of over 4,300 digits (sys.get_int_max_str_digits)
        raise RequestError(f"the JSON body cannot be read ({str(exc).split(';')[0]}); send numbers a float can hold") from None
    if _SURROGATE_ESCAPE.search(text):  # json.loads pairs surrogates into one character, and keeps a lone one
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestError(
                f"the JSON body holds a lone surrogate escape (\\u{ord(exc.object[exc.start]):04x}), which is not a character; "
                "send valid Unicode text"
            ) from None
    if not isinstance(payload, dict):
        raise RequestError(
            f"the JSON body is {_kind(payload)}, not an object; put the rows under one of {', '.join(LAYOUTS)}: {EXAMPLE}"
        )
    unknown = [k for k in payload if k not in (*LAYOUTS, PARAMS)]
    if unknown:
        hint = did_you_mean(unknown[0], (*LAYOUTS, PARAMS))
        raise RequestError(
            f"the JSON body has unknown key(s) {', '.join(map(repr, unknown))}{hint}; "
            f"use exactly one of {', '.join(LAYOUTS)} (and optionally {PARAMS})"
        )
    found = [k for k in LAYOUTS if k in payload]
    if not found:
        raise RequestError(f"the JSON body holds no rows; put them under one of {', '.join(LAYOUTS)}: {EXAMPLE}")
    if len(found) > 1:
        raise RequestError(f"the JSON body holds both {' and '.join(found)}; send the rows under one key only")
    return payload


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):  # json.loads keeps the last of a repeated key, silently
        repeated = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise RequestError(f"the JSON body repeats the key {repeated!r} in one object; send each key once")
    return found


def _params(payload: dict[str, Any]) -> dict[str, Any] | None:
    params = payload.get(PARAMS)
    if params is not None and not isinstance(params, dict):
        raise RequestError(f"the JSON body's {PARAMS} is {_kind(params)}, not an object; send {{\"name\": value, ...}}")
    return params


def _json_frame(payload: dict[str, Any], contract: DataContract, limit: _Columns) -> pd.DataFrame:
    layout = next(k for k in LAYOUTS if k in payload)
    value = payload[layout]
    if layout == SPLIT:
        return _split_frame(value, limit)
    if layout == RECORDS:
        if not isinstance(value, list):
            raise RequestError(f"{RECORDS} is {_kind(value)}, not a list of rows; send {EXAMPLE}")
        return _records_frame(value, layout, limit)
    # instances and inputs (TensorFlow Serving's layouts): rows, columns, or plain values.
    if isinstance(value, dict):
        limit.check(len(value))
        return _columns_frame(value, layout)
    if not isinstance(value, list):
        raise RequestError(f"{layout} is {_kind(value)}; send rows with column names: {{\"{layout}\": [{{\"column\": value, ...}}]}}")
    if not value:
        return pd.DataFrame()
    if any(isinstance(v, dict) for v in value):
        return _records_frame(value, layout, limit)
    if any(isinstance(v, list) for v in value):
        raise RequestError(
            f"{layout} holds rows without column names (a list of lists); name the columns: "
            f"{{\"{layout}\": [{{\"column\": value, ...}}]}}, or {SPLIT} with \"columns\""
        )
    inputs = contract.inputs
    if len(inputs) == 1:  # as MLflow does: a list of plain values is the one input column
        return pd.DataFrame({inputs[0]: value})
    raise RequestError(
        f"{layout} holds a list of plain values, but the model reads {len(inputs)} named columns "
        f"({_listed(inputs)}); send rows with column names: {{\"{layout}\": [{{\"column\": value, ...}}]}}"
    )


def _split_frame(split: Any, limit: _Columns) -> pd.DataFrame:
    shape = '{"columns": ["a", "b"], "data": [[1, "x"], ...]}'
    if not isinstance(split, dict):
        raise RequestError(f"{SPLIT} is {_kind(split)}, not an object; send {shape}")
    unknown = [k for k in split if k not in ("columns", "data", "index")]
    if unknown:
        raise RequestError(f"{SPLIT} has unknown key(s) {', '.join(map(repr, unknown))}; it takes columns, data and index; send {shape}")
    for key in ("columns", "data"):
        if key not in split:
            raise RequestError(f"{SPLIT} has no \"{key}\"; send the column names and the rows: {shape}")
    columns, data = split["columns"], split["data"]
    if not isinstance(columns, list):
        raise RequestError(f"{SPLIT} \"columns\" must be a list of column names, not {_kind(columns)}; send {shape}")
    named = [c for c in columns if not isinstance(c, str)]
    if named:
        raise RequestError(f"{SPLIT} \"columns\" holds {_kind(named[0])} ({_short(named[0])}) where a column name (text) belongs; send {shape}")
    limit.check(len(columns))
    if not isinstance(data, list):
        raise RequestError(f"{SPLIT} \"data\" must be a list of rows, not {_kind(data)}; send {shape}")
    for i, row in enumerate(data):
        if not isinstance(row, list):
            raise RequestError(f"row {i + 1} of {SPLIT} \"data\" is {_kind(row)}, not a list of values; send {shape}")
        if len(row) != len(columns):
            raise RequestError(
                f"row {i + 1} of {SPLIT} has {len(row)} value(s) for {len(columns)} column(s); "
                "send one value per column, null for a missing one"
            )
    return pd.DataFrame(data, columns=columns) if data else pd.DataFrame(columns=columns)


def _records_frame(rows: list[Any], layout: str, limit: _Columns) -> pd.DataFrame:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(
                f"row {i + 1} of {layout} is {_kind(row)}, not an object; each row maps column names to values: {EXAMPLE}"
            )
    limit.check(len(set().union(*rows)))
    return pd.DataFrame(rows)  # as MLflow reads them; a row without a key has a missing cell there


def _columns_frame(columns: dict[str, Any], layout: str) -> pd.DataFrame:
    lists = {k: v for k, v in columns.items() if isinstance(v, list)}
    if not lists:  # one value per column: one row, as MLflow reads it
        return pd.DataFrame({k: [v] for k, v in columns.items()}) if columns else pd.DataFrame()
    if len(lists) < len(columns):
        single = [k for k in columns if k not in lists]
        raise RequestError(
            f"{layout} mixes single values ({_listed(single)}) with lists of values ({_listed(list(lists))}); "
            "send every column as a list, one value per row"
        )
    lengths = Counter(len(v) for v in lists.values())
    if len(lengths) > 1:
        common = lengths.most_common(1)[0][0]
        odd = next(k for k, v in lists.items() if len(v) != common)
        raise RequestError(
            f"{layout} column '{odd}' has {len(lists[odd])} value(s) where the others have {common}; "
            "send the same number of values for every column"
        )
    return pd.DataFrame(lists)


def _check_cells(frame: pd.DataFrame, contract: DataContract) -> None:
    """One number, text or null per input cell; no booleans, and no numbers beyond a float's range, in a numeric input."""
    numeric = set(contract.numeric)
    for name in contract.inputs:
        if name not in frame.columns:
            continue  # the contract's check names it
        col = frame[name]
        if pd.api.types.is_bool_dtype(col.dtype) and name in numeric:
            _refuse_cells(name, col, col.notna().to_numpy(), contract)  # every value is a boolean
        if not pd.api.types.is_object_dtype(col.dtype):
            continue
        values = col.to_numpy()
        nested = np.fromiter((isinstance(v, _NESTED) for v in values), dtype=bool, count=len(values))
        if nested.any():
            row = int(np.flatnonzero(nested)[0])
            raise RequestError(
                f"column '{name}' of the request holds {_kind(values[row])} ({_short(values[row])}) in row {row + 1} "
                f"({int(nested.sum())} such cells); send one number, text or null per cell"
            )
        if name in numeric:
            odd = np.fromiter((_not_a_float(v) for v in values), dtype=bool, count=len(values))
            if odd.any():
                _refuse_cells(name, col, odd, contract)


def _refuse_cells(name: str, col: pd.Series, bad: np.ndarray, contract: DataContract) -> None:
    row = int(np.flatnonzero(bad)[0])
    value = col.iloc[row]
    dtype = next((c.dtype for c in contract.columns if c.name == name and c.dtype), "")
    trained_as = f" (it was {dtype} in training)" if dtype else ""
    if isinstance(value, (bool, np.bool_)):
        shown, fix = f"{json.dumps(bool(value))} (a boolean)", "send a number or null"
    else:
        shown, fix = f"a number of {_digits(value)} digits", "send a number a float can hold (up to about 1.8e308), or null"
    raise RequestError(
        f"column '{name}' must be numeric{trained_as} but the request holds {shown} (row {row + 1}, "
        f"{int(bad.sum())} such cells); {fix}"
    )


def _digits(value: int) -> str:
    try:
        return str(len(str(abs(value))))
    except ValueError:  # str() refuses an integer of over 4,300 digits
        return f"about {int(value.bit_length() * math.log10(2)) + 1}"


def _not_a_float(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return True
    return isinstance(value, int) and abs(value) > sys.float_info.max


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.Timestamp, dt.date, dt.time)):  # a Parquet date32 cell is a datetime.date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _kind(value: Any) -> str:
    """What a JSON value is, in words: 'a list', 'an object', 'text', 'a number', 'null'..."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return f"{json.dumps(bool(value))} (a boolean)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (int, float, np.number)):
        return "a number"
    return f"a {type(value).__name__} value"


def _short(value: Any, at_most: int = 60) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= at_most else f"{text[:at_most]}..."


def _listed(names: Sequence[str], at_most: int = 10) -> str:
    shown = ", ".join(map(str, names[:at_most]))
    return shown if len(names) <= at_most else f"{shown} and {len(names) - at_most} more"
