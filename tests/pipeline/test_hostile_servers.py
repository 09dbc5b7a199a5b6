"""The hostile-input catalogue for `crispml serve`: requests a hostile client sends, against one real server.

Each case is one request to `POST /invocations` of a `crispml serve` started once for this
module (with `--max-request-mb 8`). A refused request must get its status code and a body
that is one readable message (`{"error_code", "message"}`, one line, no Python stack trace),
the server must log no traceback for it, and it must still answer a good request afterwards.
Accepted hostile requests (every layout MLflow accepts, gaps, wide tables) must score as the
same rows sent as CSV do.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.models import infer_signature
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from pipeline import cli, payloads
from pipeline.servers import ContractGate
from pipeline.settings import DEFAULT_DATA
from pipeline.tracking import loading

import hostile
from servers_util import CRISPML, HOST, Server, clean_env, free_port, running

pytestmark = pytest.mark.slow

ROWS = pd.read_csv(DEFAULT_DATA).head(5)
"""Five penguins as a user has them: integer `year`, a row of gaps, and the target column."""
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
ROW = {"island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8, "flipper_length_mm": 212,
       "body_mass_g": 5200, "sex": "female", "year": 2008}
MB = 1_000_000
LIMIT_MB = 8


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode("utf-8")


def _records(*rows: dict) -> bytes:
    return _json({"dataframe_records": list(rows)})


def _split(columns: list, data: list) -> bytes:
    return _json({"dataframe_split": {"columns": columns, "data": data}})


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _without(column: str) -> dict:
    return {k: v for k, v in ROW.items() if k != column}


def _wide(extra: int) -> dict:
    return {**ROW, **{f"extra_{i}": i for i in range(extra)}}


CSV, JSON, PARQUET = "text/csv", "application/json", "application/vnd.apache.parquet"
GOOD_CSV = _csv(pd.DataFrame([ROW, ROW]))
_TWO_ROWS = GOOD_CSV.split(b"\n", 1)[1]
OVER_THE_LIMIT = GOOD_CSV + _TWO_ROWS * (LIMIT_MB * MB // len(_TWO_ROWS) + 1)
"""A CSV of some 170,000 rows, just over the limit."""


@dataclass(frozen=True)
class Request:
    """One hostile request and the answer it must get.

    Attributes:
        id: The test id.
        body: The request body.
        content_type: Its Content-Type header, or None for none.
        status: The HTTP status it must get.
        words: Fragments the one-line message must hold (the problem and the fix).
        headers: Other headers to send.
    """

    id: str
    body: bytes
    content_type: str | None
    status: int
    words: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)


LACKS_ISLAND = "the request lacks 1 column(s) the model needs: island; add them"

CASES: list[Request] = [
    # 1. What the body is: content type, encoding, JSON that is not a request.
    Request("no-content-type", _records(ROW), None, 415, ("no Content-Type header", "application/json", "text/csv")),
    Request("empty-content-type", _records(ROW), "", 415, ("no Content-Type header",)),
    Request("text-plain", GOOD_CSV, "text/plain", 415, ("Content-Type 'text/plain' is not accepted", "text/csv")),
    Request("misspelt-content-type", _records(ROW), "application/jsn", 415, ("did you mean 'application/json'?",)),
    Request("charset-latin-1", GOOD_CSV, "text/csv; charset=latin-1", 415, ("UTF-8 only", "charset=utf-8")),
    Request("mlflow-1-format-parameter", _records(ROW), "application/json; format=pandas-records", 415,
            ("a parameter the server does not read (format)", "dataframe_records")),
    Request("content-encoding-gzip", GOOD_CSV, CSV, 415, ("Content-Encoding 'gzip' is not accepted", "uncompressed"),
            headers={"Content-Encoding": "gzip"}),
    Request("gzip-body", b"\x1f\x8b\x08\x00" + GOOD_CSV, CSV, 400, ("gzip-compressed", "uncompressed")),
    Request("csv-not-utf8", GOOD_CSV.replace(b"Biscoe", b"Bisc\xf6e"), CSV, 400, ("not UTF-8 (byte 0xf6", "send UTF-8")),
    Request("json-not-utf8", _records(ROW).replace(b"Biscoe", b"Bisc\xffe"), JSON, 400, ("not UTF-8 (byte 0xff",)),
    Request("empty-json-body", b"", JSON, 400, ("the request body is empty",)),
    Request("empty-csv-body", b"", CSV, 400, ("the request body is empty",)),
    Request("blank-body", b" \n\n ", CSV, 400, ("the request body is empty",)),
    Request("malformed-json", b'{"dataframe_records": [{"island": "Biscoe",}]}', JSON, 400,
            ("not valid JSON", '"dataframe_records"')),
    Request("json-list", _json([ROW]), JSON, 400, ("the JSON body is a list, not an object", "dataframe_records")),
    Request("json-text", _json("Biscoe"), JSON, 400, ("the JSON body is text, not an object",)),
    Request("json-number", b"42", JSON, 400, ("the JSON body is a number, not an object",)),
    Request("json-null", b"null", JSON, 400, ("the JSON body is null, not an object",)),
    Request("unknown-key-typo", _json({"dataframe_record": [ROW]}), JSON, 400,
            ("unknown key(s) 'dataframe_record'", "did you mean 'dataframe_records'?")),
    Request("llm-key", _json({"messages": [{"role": "user", "content": "hi"}]}), JSON, 400, ("unknown key(s) 'messages'",)),
    Request("unknown-key-beside-rows", _json({"dataframe_records": [ROW], "param": {}}), JSON, 400,
            ("unknown key(s) 'param'", "did you mean 'params'?")),
    Request("two-layouts", _json({"dataframe_records": [ROW], "instances": [ROW]}), JSON, 400,
            ("holds both dataframe_records and instances", "one key only")),
    Request("params-only", _json({"params": {}}), JSON, 400, ("the JSON body holds no rows",)),
    Request("params-not-an-object", _json({"dataframe_records": [ROW], "params": [1]}), JSON, 400,
            ("params is a list, not an object",)),
    Request("repeated-json-key", b'{"dataframe_records": [{"island": "Biscoe", "island": "Dream"}]}', JSON, 400,
            ("repeats the key 'island' in one object", "send each key once")),
    Request("deeply-nested-json", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON, 400,
            ("nests too deeply",)),
    Request("lone-surrogate-escape", _records(ROW).replace(b"Biscoe", b"Bisc\\ud800e"), JSON, 400,
            ("lone surrogate escape (\\ud800)", "valid Unicode")),
    Request("integer-of-5000-digits", b'{"dataframe_records": [{"year": ' + b"7" * 5000 + b"}]}", JSON, 400,
            ("cannot be read", "4300 digits")),
    Request("parquet-garbage", b"PAR1 not really a parquet file", PARQUET, 400,
            ("not a Parquet file", "DataFrame.to_parquet")),
    Request("csv-sent-as-parquet", GOOD_CSV, PARQUET, 400, ("not a Parquet file",)),
    Request("body-over-the-limit", OVER_THE_LIMIT, CSV, 413,
            (f"over the server's limit of {LIMIT_MB} MB", "--max-request-mb")),
    # 2. The table's shape: names and rows that do not line up.
    Request("csv-duplicate-column", b"island,island,bill_length_mm\nBiscoe,Dream,1\n", CSV, 400,
            ("duplicate column names: island", "rename them")),
    Request("csv-row-longer-than-header", GOOD_CSV + b"Dream,1,2,3,4,male,2009,surplus\n", CSV, 400,
            ("not well-formed", "Expected 7 fields in line 4, saw 8")),
    Request("csv-unclosed-quote", b'island,year\n"Biscoe,2008\n', CSV, 400, ("not well-formed",)),
    Request("csv-semicolons", pd.DataFrame([ROW]).to_csv(index=False, sep=";").encode(), CSV, 400,
            ("seems to use ';' between fields", "comma-separated")),
    Request("csv-tabs", pd.DataFrame([ROW]).to_csv(index=False, sep="\t").encode(), CSV, 400, ("seems to use tabs",)),
    Request("csv-header-only", b",".join(k.encode() for k in ROW) + b"\n", CSV, 400, ("the request holds no rows",)),
    Request("split-row-shorter", _split(FEATURES, [list(ROW.values()), list(ROW.values())[:-1]]), JSON, 400,
            ("row 2 of dataframe_split has 6 value(s) for 7 column(s)", "null for a missing one")),
    Request("split-row-longer", _split(FEATURES, [[*ROW.values(), 1]]), JSON, 400,
            ("row 1 of dataframe_split has 8 value(s) for 7 column(s)",)),
    Request("split-without-columns", _json({"dataframe_split": {"data": [list(ROW.values())]}}), JSON, 400,
            ('dataframe_split has no "columns"',)),
    Request("split-without-data", _json({"dataframe_split": {"columns": FEATURES}}), JSON, 400,
            ('dataframe_split has no "data"',)),
    Request("split-numbers-as-names", _split([0, 1], [[1, 2]]), JSON, 400, ("holds a number (0) where a column name",)),
    Request("split-not-an-object", _json({"dataframe_split": [ROW]}), JSON, 400, ("dataframe_split is a list, not an object",)),
    Request("split-unknown-key", _json({"dataframe_split": {"columns": FEATURES, "data": [], "dtype": {}}}), JSON, 400,
            ("dataframe_split has unknown key(s) 'dtype'",)),
    Request("split-row-an-object", _split(FEATURES, [ROW]), JSON, 400, ('row 1 of dataframe_split "data" is an object',)),
    Request("split-duplicate-column", _split([*FEATURES, "island"], [[*ROW.values(), "Dream"]]), JSON, 400,
            ("duplicate column names: island",)),
    Request("split-no-rows", _split(FEATURES, []), JSON, 400, ("the request holds no rows",)),
    Request("records-not-a-list", _json({"dataframe_records": ROW}), JSON, 400, ("dataframe_records is an object, not a list",)),
    Request("records-row-a-list", _json({"dataframe_records": [ROW, list(ROW.values())]}), JSON, 400,
            ("row 2 of dataframe_records is a list, not an object",)),
    Request("records-no-rows", _records(), JSON, 400, ("the request holds no rows",)),
    Request("records-key-absent-from-every-row", _records(_without("island"), _without("island")), JSON, 400, (LACKS_ISLAND,)),
    # 3. The data contract in every layout MLflow accepts: a missing column is named.
    Request("csv-lacks-a-column", _csv(pd.DataFrame([_without("island")])), CSV, 400, (LACKS_ISLAND,)),
    Request("parquet-lacks-a-column", _parquet(pd.DataFrame([_without("island")])), PARQUET, 400, (LACKS_ISLAND,)),
    Request("split-lacks-a-column", _split(FEATURES[1:], [list(_without("island").values())]), JSON, 400, (LACKS_ISLAND,)),
    Request("instances-rows-lack-a-column", _json({"instances": [_without("island")]}), JSON, 400, (LACKS_ISLAND,)),
    Request("instances-columns-lack-a-column", _json({"instances": {k: [v] for k, v in _without("island").items()}}),
            JSON, 400, (LACKS_ISLAND,)),
    Request("inputs-rows-lack-a-column", _json({"inputs": [_without("island")]}), JSON, 400, (LACKS_ISLAND,)),
    Request("inputs-columns-lack-a-column", _json({"inputs": {k: [v] for k, v in _without("island").items()}}),
            JSON, 400, (LACKS_ISLAND,)),
    Request("inputs-one-row-lacks-a-column", _json({"inputs": _without("island")}), JSON, 400, (LACKS_ISLAND,)),
    Request("instances-lists-without-names", _json({"instances": [list(ROW.values())]}), JSON, 400,
            ("instances holds rows without column names (a list of lists)", "name the columns")),
    Request("inputs-lists-without-names", _json({"inputs": [list(ROW.values())] * 2}), JSON, 400,
            ("inputs holds rows without column names",)),
    Request("inputs-plain-values", _json({"inputs": [1.0, 2.0]}), JSON, 400,
            ("inputs holds a list of plain values, but the model reads 7 named columns",)),
    Request("inputs-a-number", _json({"inputs": 3}), JSON, 400, ("inputs is a number",)),
    Request("inputs-single-values-and-lists", _json({"inputs": {**{k: [v] for k, v in ROW.items()}, "year": 2008}}),
            JSON, 400, ("inputs mixes single values (year) with lists of values",)),
    Request("inputs-columns-of-unequal-length", _json({"inputs": {**{k: [v, v] for k, v in ROW.items()}, "sex": ["male"]}}),
            JSON, 400, ("inputs column 'sex' has 1 value(s) where the others have 2",)),
    Request("instances-rows-and-lists", _json({"instances": [ROW, list(ROW.values())]}), JSON, 400,
            ("row 2 of instances is a list, not an object",)),
    Request("instances-text-in-a-numeric-column", _json({"instances": [{**ROW, "body_mass_g": "heavy"}]}), JSON, 400,
            ("column 'body_mass_g' must be numeric", "'heavy'", "row 1")),
    Request("inputs-text-in-a-numeric-column", _json({"inputs": {**{k: [v] for k, v in ROW.items()}, "year": ["soon"]}}),
            JSON, 400, ("column 'year' must be numeric", "'soon'")),
    # 4. Values of the wrong type, and sizes.
    Request("records-text-in-a-numeric-column", _records(ROW, {**ROW, "bill_depth_mm": "deep"}), JSON, 400,
            ("column 'bill_depth_mm' must be numeric", "'deep' (row 2")),
    Request("list-in-a-numeric-cell", _records({**ROW, "body_mass_g": [5200, 5300]}), JSON, 400,
            ("column 'body_mass_g' of the request holds a list ([5200, 5300]) in row 1", "one number, text or null per cell")),
    Request("list-in-a-text-cell", _records(ROW, {**ROW, "sex": ["female"]}), JSON, 400,
            ("column 'sex' of the request holds a list (['female']) in row 2",)),
    Request("object-in-a-text-cell", _split(FEATURES, [[{"name": "Biscoe"}, *list(ROW.values())[1:]]]), JSON, 400,
            ("column 'island' of the request holds an object",)),
    Request("boolean-in-a-numeric-cell", _records({**ROW, "year": True}), JSON, 400,
            ("column 'year' must be numeric", "true (a boolean)", "send a number or null")),
    Request("boolean-text-in-a-numeric-csv-column", _csv(pd.DataFrame([{**ROW, "year": "True"}])), CSV, 400,
            ("column 'year' must be numeric",)),
    Request("parquet-boolean-column", _parquet(pd.DataFrame([ROW, ROW]).assign(year=[True, False])), PARQUET, 400,
            ("column 'year' must be numeric", "true (a boolean)")),
    Request("parquet-list-column", _parquet(pd.DataFrame([ROW, ROW]).assign(sex=[["f"], ["m"]])), PARQUET, 400,
            ("column 'sex' of the request holds a list",)),
    Request("parquet-bytes-column", _parquet(pd.DataFrame([ROW, ROW]).assign(island=[b"Biscoe", b"Dream"])), PARQUET, 400,
            ("column 'island' of the request holds a bytes value",)),
    Request("integer-past-a-float", _records({**ROW, "body_mass_g": 10**400}), JSON, 400,
            ("column 'body_mass_g' must be numeric", "a number of 401 digits", "a float can hold")),
    Request("csv-integer-past-a-float", _csv(pd.DataFrame([{**ROW, "body_mass_g": "9" * 400}])), CSV, 400,
            ("column 'body_mass_g' must be numeric", "a number of 400 digits")),
    Request("json-number-past-a-float", b'{"dataframe_records": [' + _json({**ROW, "bill_length_mm": 0}).replace(
            b'"bill_length_mm": 0', b'"bill_length_mm": 1e999') + b"]}", JSON, 400,
            ("column 'bill_length_mm' of the request holds an infinite value",)),
    Request("json-infinity", _records({**ROW, "flipper_length_mm": float("inf")}), JSON, 400,
            ("column 'flipper_length_mm' of the request holds an infinite value (row 1",)),
    Request("csv-too-many-columns", _csv(pd.DataFrame([_wide(10_000)])), CSV, 400,
            ("the request has 10,007 columns, over the server's limit of 10,000 (the model reads 7)",)),
    Request("records-too-many-columns", _records(_wide(10_000)), JSON, 400, ("the request has 10,007 columns",)),
    Request("split-too-many-columns", _split(list(_wide(10_000)), [list(_wide(10_000).values())]), JSON, 400,
            ("the request has 10,007 columns",)),
    Request("parquet-too-many-columns", _parquet(pd.DataFrame([_wide(10_000)])), PARQUET, 400,
            ("the request has 10,007 columns",)),
    Request("inputs-too-many-columns", _json({"inputs": {k: [v] for k, v in _wide(10_000).items()}}), JSON, 400,
            ("the request has 10,007 columns",)),
]


@pytest.fixture(scope="module")
def serving(penguins_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`crispml serve` on the exported penguins model, with an 8 MB limit on a request's body."""
    tmp = tmp_path_factory.mktemp("hostile-serve")
    port = free_port()
    command = [CRISPML, "serve", "--model", penguins_run.result.export_dir, "--port", str(port),
               "--max-request-mb", str(LIMIT_MB)]
    with running(command, tmp / "logs", "serve", cwd=tmp, env=clean_env()) as server:
        assert server.first_line() == f"http://{HOST}:{port}/invocations"
        server.wait_http(f"http://{HOST}:{port}/ping")
        yield server


@pytest.fixture(scope="module")
def served(serving: Server) -> str:
    """The scoring URL."""
    return serving.first_line()


@pytest.fixture(scope="module")
def expected(served: str) -> list[dict[str, object]]:
    """What the five penguin rows score as, sent as CSV."""
    response = requests.post(served, data=_csv(ROWS), headers={"Content-Type": CSV}, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(ROWS) and {p["prediction"] for p in predictions} <= {"Adelie", "Chinstrap", "Gentoo"}
    return predictions


def _post(url: str, body: bytes, content_type: str | None, headers: dict[str, str] | None = None) -> requests.Response:
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    # `requests` sends no Content-Type of its own for a bytes body, so None means none at all.
    return requests.post(url, data=body, headers=sent, timeout=120)


def _log_since(server: Server, start: int) -> str:
    return server.stderr.read_bytes()[start:].decode("utf-8", "replace")


def _still_answers(url: str, expected: list[dict[str, object]]) -> None:
    response = requests.post(url, data=_csv(ROWS), headers={"Content-Type": CSV}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_request_gets_one_readable_message(serving: Server, served: str, expected: list[str], case: Request) -> None:
    start = serving.stderr.stat().st_size
    response = _post(served, case.body, case.content_type, case.headers)
    assert response.status_code == case.status, response.text[:2000]
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert set(answer) == {"error_code", "message"}, answer
    assert answer["error_code"] == {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}[case.status]
    message = answer["message"]
    assert "\n" not in message and len(message) < 600, message
    assert "Traceback" not in message and 'File "' not in message, message
    for words in case.words:
        assert words in message, message
    _still_answers(served, expected)
    log = _log_since(serving, start)
    assert "Traceback" not in log and "Internal Server Error" not in log, log[-3000:]


def _layouts(frame: pd.DataFrame) -> dict[str, tuple[bytes, str]]:
    """The same rows in every layout MLflow's scoring server accepts."""
    records = json.loads(frame.to_json(orient="records"))
    columns = json.loads(frame.to_json(orient="split", index=False))
    by_column = {c: [r.get(c) for r in records] for c in frame.columns}
    return {
        "csv": (_csv(frame), CSV),
        "csv-with-bom": (b"\xef\xbb\xbf" + _csv(frame), "text/csv; charset=utf-8"),
        "parquet": (_parquet(frame), PARQUET),
        "dataframe_split": (_json({"dataframe_split": columns}), JSON),
        "dataframe_split-with-index": (_json({"dataframe_split": {**columns, "index": list(range(10, 10 + len(frame)))}}), JSON),
        "dataframe_records": (_json({"dataframe_records": records}), JSON),
        "instances-rows": (_json({"instances": records}), JSON),
        "instances-columns": (_json({"instances": by_column}), JSON),
        "inputs-rows": (_json({"inputs": records}), JSON),
        "inputs-columns": (_json({"inputs": by_column}), "Application/JSON"),
        "records-with-params": (_json({"dataframe_records": records, "params": {}}), JSON),
    }


def test_every_layout_meets_the_contract_and_scores_as_csv(served: str, expected: list[str]) -> None:
    for name, (body, content_type) in _layouts(ROWS).items():
        response = _post(served, body, content_type)
        assert response.status_code == 200, (name, response.text)
        assert response.json()["predictions"] == expected, name
    first = json.loads(ROWS.head(1).to_json(orient="records"))[0]
    one_row = _post(served, _json({"inputs": first}), JSON)  # one value per column: one row
    assert one_row.status_code == 200 and one_row.json()["predictions"] == expected[:1], one_row.text


def test_a_key_a_record_lacks_is_a_missing_cell_as_in_a_csv(served: str) -> None:
    # As `crispml predict` reads an empty CSV cell: the row is scored with a gap there.
    gap = _without("sex")
    as_csv = _post(served, _csv(pd.DataFrame([ROW, {**ROW, "sex": None}])), CSV)
    for layout in ("dataframe_records", "instances", "inputs"):
        response = _post(served, _json({layout: [ROW, gap]}), JSON)
        assert response.status_code == 200, (layout, response.text)
        assert response.json()["predictions"] == as_csv.json()["predictions"], layout


def test_nulls_in_every_row_are_scored_with_a_warning(serving: Server, served: str) -> None:
    start = serving.stderr.stat().st_size
    for rows in ([{**ROW, "body_mass_g": None}] * 3, [{k: None for k in ROW}] * 3):
        response = _post(served, _records(*rows), JSON)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 3
    log = _log_since(serving, start)
    assert "crispml: warning: " in log and "Traceback" not in log, log


def test_wide_and_long_requests_under_the_limits_are_scored(serving: Server, served: str, expected: list[str]) -> None:
    start = serving.stderr.stat().st_size
    wide = pd.concat([ROWS, pd.DataFrame(np.zeros((len(ROWS), 9_000)), columns=[f"x{i}" for i in range(9_000)])], axis=1)
    response = _post(served, _csv(wide), CSV)
    assert response.status_code == 200 and response.json()["predictions"] == expected, response.text[:500]
    assert "9001 column(s) of the request are not model inputs" in _log_since(serving, start)
    long = pd.concat([ROWS] * 4_000, ignore_index=True)  # 20,000 rows, about 0.9 MB
    body = _csv(long)
    assert 0.5 * MB < len(body) < LIMIT_MB * MB
    response = _post(served, body, CSV)
    assert response.status_code == 200, response.text[:500]
    # The same answers; a probability may differ in its last bits (BLAS sums 20,000 rows in other blocks than 5).
    got, want = pd.DataFrame(response.json()["predictions"]), pd.DataFrame(expected * 4_000)
    pd.testing.assert_frame_equal(got, want, rtol=1e-9)


def test_a_body_over_the_limit_sent_in_chunks_gets_a_413(served: str, expected: list[str]) -> None:
    chunk = _csv(pd.DataFrame([ROW] * 2_000))

    def chunks() -> Iterator[bytes]:  # no Content-Length: `requests` sends it chunked
        yield chunk
        for _ in range(LIMIT_MB * MB // len(chunk) + 1):
            yield chunk.split(b"\n", 1)[1]

    response = requests.post(served, data=chunks(), headers={"Content-Type": CSV}, timeout=120)
    assert response.status_code == 413, response.text
    assert f"over the server's limit of {LIMIT_MB} MB" in response.json()["message"]
    _still_answers(served, expected)


# `crispml serve` refused on its command line, before any model is loaded or port bound.
SERVE_CASES = [
    hostile.Hostile("serve-max-request-mb-zero", ("serve", "--model", "MODEL", "--max-request-mb", "0"),
                    ("--max-request-mb 0 is not a size", "above 0"), needs_model=True),
    hostile.Hostile("serve-max-request-mb-negative", ("serve", "--model", "MODEL", "--max-request-mb", "-5"),
                    ("--max-request-mb -5 is not a size",), needs_model=True),
    hostile.Hostile("serve-max-request-mb-nan", ("serve", "--model", "MODEL", "--max-request-mb", "nan"),
                    ("--max-request-mb nan is not a size",), needs_model=True),
    hostile.Hostile("serve-max-request-mb-inf", ("serve", "--model", "MODEL", "--max-request-mb", "inf"),
                    ("--max-request-mb inf is not a size",), needs_model=True),
    hostile.Hostile("serve-port-zero", ("serve", "--model", "MODEL", "--port", "0"), ("--port 0 is not a TCP port",),
                    needs_model=True),
    hostile.Hostile("serve-port-too-high", ("serve", "--model", "MODEL", "--port", "70000"),
                    ("--port 70000 is not a TCP port", "1 to 65535"), needs_model=True),
]


@pytest.mark.parametrize("case", SERVE_CASES, ids=[c.id for c in SERVE_CASES])
def test_serve_refuses_a_hostile_command_line(case, penguins_run, tmp_path, capsys, monkeypatch) -> None:
    hostile.run_case(case, tmp_path, Path(penguins_run.result.export_dir), cli.main, capsys, monkeypatch)


async def _asgi_post(app, body: bytes, content_type: str) -> tuple[int, dict]:
    """One POST /invocations through an ASGI application, in this process."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/invocations", "raw_path": b"/invocations", "root_path": "", "query_string": b"",
             "headers": headers, "server": (HOST, 5001), "client": (HOST, 50000)}
    sent = False
    answer: dict = {"body": b""}

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.sleep(60)  # nothing more: the client waits for the answer
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], json.loads(answer["body"])


def test_a_model_without_a_cleaning_plan_meets_its_signature_in_every_layout(tmp_path: Path) -> None:
    # A plain MLflow model, as a user saves it without crispml: the gate checks its signature's
    # columns, then hands MLflow the input columns as sent (CSV and Parquet as they are).
    X = pd.DataFrame({"a": [0.5, 1.5, 2.5, 3.5], "b": ["x", "y", "x", "y"]})
    encode = make_column_transformer((OneHotEncoder(), ["b"]), remainder="passthrough")
    model = make_pipeline(encode, LogisticRegression(random_state=0)).fit(X, [0, 1, 0, 1])
    mlflow.sklearn.save_model(model, str(tmp_path / "model"), signature=infer_signature(X, model.predict(X)))
    scoring = loading.scoring_app(str(tmp_path / "model"), f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert scoring.contract.cleaning is None
    gate = ContractGate(scoring.app, scoring.contract)
    rows = X.assign(extra=["p", "q", "r", "s"])
    want = model.predict(X).tolist()
    for name, (body, content_type) in _layouts(rows).items():
        status, answer = asyncio.run(_asgi_post(gate, body, content_type))
        assert status == 200 and answer["predictions"] == want, (name, answer)
    status, answer = asyncio.run(_asgi_post(gate, _json({"instances": [{"a": 1.0}]}), JSON))
    assert status == 400 and answer["message"].startswith("the request lacks 1 column(s) the model needs: b;"), answer
    status, answer = asyncio.run(_asgi_post(gate, _json({"inputs": [[1.0, "x"]]}), JSON))
    assert status == 400 and "without column names" in answer["message"], answer


def test_a_bug_while_reading_a_request_is_a_one_line_500_and_a_logged_traceback(
    penguins_run, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    scoring = loading.scoring_app(str(penguins_run.result.export_dir), penguins_run.tracking_uri)
    gate = ContractGate(scoring.app, scoring.contract)

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(payloads, "read_request", broken)
    status, answer = asyncio.run(_asgi_post(gate, GOOD_CSV, CSV))
    assert status == 500 and answer["error_code"] == "INTERNAL_ERROR", answer
    assert answer["message"] == "crispml could not read this request (KeyError); this is a bug in crispml, please report it"
    assert "KeyError: 'a bug'" in caplog.text  # the traceback goes to the server's log, not to the client
