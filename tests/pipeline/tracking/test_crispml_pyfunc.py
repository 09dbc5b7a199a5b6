"""The pyfunc loader shipped in every model: raw rows in, the same answers as `crispml predict` out."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from pipeline.tracking import crispml_pyfunc
from pipeline.tracking.crispml_pyfunc import ContractError, ContractModel, conform, inputs
from stages.contract import check_rows, score
from stages.fold_fits import predict_with_proba


def test_it_reads_a_messy_raw_file_as_crispml_predict_does(trained_on_raw):
    raw, model, X, contract, _ = trained_on_raw
    saved = json.loads(json.dumps(contract.to_dict()))  # as MLmodel's metadata holds it
    rows = raw.drop(columns="y")
    assert inputs(saved) == list(contract.inputs) == ["age", "income", "visit", "colour"]
    pd.testing.assert_frame_equal(conform(rows, saved), check_rows(rows, contract).features, check_dtype=False)
    answer = ContractModel(model, saved).predict(rows)
    batch = score(model, rows, contract).frame
    assert list(answer.columns) == ["prediction", "proba_no", "proba_yes"]
    pd.testing.assert_frame_equal(answer, batch[list(answer.columns)].reset_index(drop=True))


def test_integers_floats_and_text_numbers_all_read_as_the_same_numbers(trained_on_raw):
    raw, model, _, contract, _ = trained_on_raw
    saved = contract.to_dict()
    one = pd.DataFrame({"age": [30], "income": [3750], "visit": ["2021-03-04"], "colour": ["red"]})  # int64, as pandas reads
    as_float = one.astype({"age": "float64", "income": "float64"})
    as_text = pd.DataFrame({"age": ["30"], "income": ["3,750"], "visit": ["2021-03-04"], "colour": [" red "]})
    want = ContractModel(model, saved).predict(one)
    for other in (as_float, as_text):
        pd.testing.assert_frame_equal(ContractModel(model, saved).predict(other), want)
    with_gap = one.astype({"age": "float64"}).assign(age=np.nan)
    assert ContractModel(model, saved).predict(with_gap)["prediction"].iloc[0] in {"yes", "no"}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: f.drop(columns="visit"), "the input lacks 1 column(s) the model needs: visit;"),
        (lambda f: f.assign(income="lots"), "column 'income' must be numeric"),
        (lambda f: f.assign(age=np.inf), "column 'age' of the input holds an infinite value"),
    ],
)
def test_rows_it_cannot_score_are_one_line_errors_mlflow_keeps_as_they_are(trained_on_raw, change, words):
    _, model, _, contract, _ = trained_on_raw
    one = pd.DataFrame({"age": ["30"], "income": ["3,750"], "visit": ["2021-03-04"], "colour": ["red"]})
    with pytest.raises(ContractError) as caught:
        ContractModel(model, contract.to_dict()).predict(change(one))
    error = caught.value
    assert isinstance(error, MlflowException) and words in error.message and "\n" not in error.message
    error.message = "Failed to predict data '<the whole request>'"  # what MLflow's scoring server does to it
    assert words in error.message and error.get_http_status_code() == 400


def test_it_imports_nothing_of_crispml():
    source = crispml_pyfunc.__file__
    text = open(source, encoding="utf-8").read()
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", text, flags=re.M)
    assert imports and not [m for m in imports if m.split(".")[0] in ("stages", "pipeline", "crispml")], imports


def test_a_regressor_answers_its_prediction_only():
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    model = LinearRegression().fit(frame, [2.0, 4.0, 6.0])
    contract = {"columns": [{"name": "a", "kind": "numeric", "dtype": "float64"}]}
    answer = ContractModel(model, contract).predict(pd.DataFrame({"a": [4]}))
    assert list(answer.columns) == ["prediction"] and answer["prediction"].iloc[0] == pytest.approx(8.0)
    pred, _ = predict_with_proba(model, frame, None)
    assert list(ContractModel(model, contract).predict(frame)["prediction"]) == pytest.approx(list(pred))


def test_dates_as_iso_text_duplicate_unused_columns_and_scalars_are_read_or_refused_in_one_line(trained_on_raw):
    _, model, _, contract, _ = trained_on_raw
    saved = contract.to_dict()
    one = pd.DataFrame({"age": ["30"], "income": ["3,750"], "visit": ["2021-03-04"], "colour": ["red"]})
    iso = one.assign(visit=["2021-03-04T00:00:00"])  # how JSON carries a Parquet date
    pd.testing.assert_frame_equal(conform(iso, saved), conform(one, saved))
    pd.testing.assert_frame_equal(conform(iso, saved), check_rows(iso, contract).features, check_dtype=False)  # crispml agrees
    extra = pd.concat([one, pd.DataFrame([[1, 2]], columns=["note", "note"])], axis=1)  # a repeated column the model does not read
    assert ContractModel(model, saved).predict(extra)["prediction"].iloc[0] in {"yes", "no"}
    with pytest.raises(ContractError, match="duplicate column names: age"):
        conform(pd.concat([one, one[["age"]]], axis=1), saved)
    with pytest.raises(ContractError, match="not a table of named columns"):
        ContractModel(model, saved).predict({"age": 30, "income": 5})
