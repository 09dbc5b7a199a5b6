"""Reading scoring requests (`pipeline.payloads`): every layout MLflow accepts, into one table, or one clear refusal."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from pipeline import payloads
from pipeline.payloads import RequestError, read_request, split_body
from stages.contract import ColumnContract, DataContract, check_rows
from stages.understanding import CATEGORICAL, NUMERIC

CONTRACT = DataContract(columns=(ColumnContract("a", NUMERIC, "float64"), ColumnContract("b", CATEGORICAL, "str")))
ROWS = [{"a": 1.5, "b": "x"}, {"a": None, "b": "y"}, {"a": 3.0, "b": None}]
JSON = "application/json"


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode("utf-8")


def _frame(body: bytes, content_type: str = JSON, contract: DataContract = CONTRACT) -> pd.DataFrame:
    return read_request(body, content_type, contract).frame


def _refused(body: bytes, content_type: str | None = JSON, contract: DataContract = CONTRACT, **headers: str) -> RequestError:
    with pytest.raises(RequestError) as caught:
        read_request(body, content_type, contract, content_encoding=headers.get("encoding"))
    assert "\n" not in str(caught.value)
    return caught.value


def test_every_layout_reads_as_the_same_rows() -> None:
    expected = pd.DataFrame(ROWS)
    columns = {"a": [r["a"] for r in ROWS], "b": [r["b"] for r in ROWS]}
    parquet = io.BytesIO()
    expected.to_parquet(parquet, index=False)
    bodies = {
        "csv": (b"a,b\n1.5,x\n,y\n3.0,\n", "text/csv"),
        "parquet": (parquet.getvalue(), payloads.PARQUET),
        "split": (_json({"dataframe_split": {"columns": ["a", "b"], "data": [[r["a"], r["b"]] for r in ROWS]}}), JSON),
        "records": (_json({"dataframe_records": ROWS}), JSON),
        "instances-rows": (_json({"instances": ROWS}), JSON),
        "instances-columns": (_json({"instances": columns}), JSON),
        "inputs-rows": (_json({"inputs": ROWS}), JSON),
        "inputs-columns": (_json({"inputs": columns}), "application/json; charset=UTF-8"),
    }
    for name, (body, content_type) in bodies.items():
        frame = _frame(body, content_type)
        checked = check_rows(frame, CONTRACT, what="the request").features
        assert checked["a"].tolist()[::2] == [1.5, 3.0] and np.isnan(checked["a"].iloc[1]), name
        assert checked["b"].tolist()[:2] == ["x", "y"] and pd.isna(checked["b"].iloc[2]), name


def test_a_key_a_record_lacks_is_a_missing_cell() -> None:
    frame = _frame(_json({"dataframe_records": [{"a": 1.0, "b": "x"}, {"b": "y"}]}))
    assert list(frame.columns) == ["a", "b"] and np.isnan(frame["a"].iloc[1])


def test_a_list_of_plain_values_is_the_single_input_column_of_a_one_column_model() -> None:
    one = DataContract(columns=(ColumnContract("a", NUMERIC),))
    assert _frame(_json({"inputs": [1.0, 2.0]}), contract=one)["a"].tolist() == [1.0, 2.0]
    assert "the model reads 2 named columns (a, b)" in str(_refused(_json({"inputs": [1.0, 2.0]})))


def test_one_value_per_column_is_one_row_as_for_mlflow() -> None:
    frame = _frame(_json({"inputs": {"a": 2.0, "b": "z"}}))
    assert frame.to_dict("records") == [{"a": 2.0, "b": "z"}]


@pytest.mark.parametrize(
    ("content_type", "encoding", "words"),
    [
        (None, None, "no Content-Type header"),
        ("text/html", None, "Content-Type 'text/html' is not accepted"),
        ("text/cvs", None, "did you mean 'text/csv'?"),
        ("text/csv; charset=utf-16", None, "UTF-8 only"),
        ("application/json; format=pandas-split", None, "(format)"),
        ("text/csv", "gzip", "Content-Encoding 'gzip'"),
    ],
)
def test_a_content_type_the_server_does_not_read_is_a_415(content_type, encoding, words) -> None:
    error = _refused(b"a,b\n1,x\n", content_type, encoding=encoding)
    assert error.status == 415 and words in str(error), error


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "the request body is empty"),
        (b"[1]", "the JSON body is a list, not an object"),
        (b'{"a": 1}', "unknown key(s) 'a'"),
        (b'{"dataframe_records": [{"a": 1, "a": 2}]}', "repeats the key 'a'"),
        (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}', "row 1 of dataframe_split has 1 value(s) for 2"),
        (b'{"dataframe_split": {"data": [[1, "x"]]}}', 'dataframe_split has no "columns"'),
        (b'{"instances": [[1, "x"]]}', "without column names"),
        (b'{"dataframe_records": [{"a": [1], "b": "x"}]}', "column 'a' of the request holds a list ([1]) in row 1"),
        (b'{"dataframe_records": [{"a": false, "b": "x"}]}', "column 'a' must be numeric (it was float64 in training)"),
        (b'{"dataframe_records": []}', "the request holds no rows"),
        (b'{"inputs": {"a": [1, 2], "b": ["x"]}}', "inputs column 'b' has 1 value(s) where the others have 2"),
    ],
)
def test_a_body_that_is_not_a_table_of_named_columns_is_a_400(body: bytes, words: str) -> None:
    error = _refused(body)
    assert error.status == 400 and words in str(error), error


def test_the_column_limit_is_at_least_twice_the_models_inputs() -> None:
    wide = DataContract(columns=tuple(ColumnContract(f"c{i}", NUMERIC) for i in range(6_000)))
    header = ",".join(f"c{i}" for i in range(12_000)).encode()
    assert _frame(header + b"\n" + b",".join([b"1"] * 12_000) + b"\n", "text/csv", wide).shape == (1, 12_000)
    error = _refused(header + b",extra\n" + b",".join([b"1"] * 12_001) + b"\n", "text/csv", wide)
    assert "the request has 12,001 columns, over the server's limit of 12,000 (the model reads 6000)" in str(error)
    assert payloads.MAX_COLUMNS == 10_000


def test_split_body_keeps_exact_floats_nulls_and_params() -> None:
    frame = pd.DataFrame({"a": [0.1 + 0.2, np.nan], "b": pd.Series(["x", None], dtype="str")})
    body = json.loads(split_body(frame, {"threshold": 0.5}))
    assert body == {"dataframe_split": {"columns": ["a", "b"], "data": [[0.1 + 0.2, "x"], [None, None]]},
                    "params": {"threshold": 0.5}}
    assert "params" not in json.loads(split_body(frame))


def test_a_byte_order_mark_is_not_part_of_the_first_column_name() -> None:
    assert list(_frame(b"\xef\xbb\xbfa,b\n1,x\n", "text/csv").columns) == ["a", "b"]
    assert payloads.without_bom(b"\xef\xbb\xbfa,b\n") == b"a,b\n"
