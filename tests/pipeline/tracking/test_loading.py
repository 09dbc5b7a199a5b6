"""Loading a saved model on its own (`pipeline.tracking.loading`): by folder or URI, with its contract and version warnings."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest
import sklearn
from mlflow.models import Model, infer_signature
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from pipeline.errors import ModelLoadError
from pipeline.exports import MANIFEST
from pipeline.tracking import loading
from stages.contract import CONTRACT_KEY, contract_from_signature
from stages.model_registry import trusted_types

from conftest import sqlite_uri


@pytest.mark.parametrize(
    ("source", "uri"),
    [
        ("models:/penguins@champion", True),
        ("models:/m-0123", True),
        ("runs:/abc/model", True),
        ("s3://bucket/model", True),
        ("models/penguins/model", False),
        ("/abs/models/penguins/model", False),
    ],
)
def test_a_source_is_a_uri_or_a_folder(source, uri):
    assert loading.is_model_uri(source) is uri


def test_a_folder_without_an_mlmodel_file_is_no_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no model at .*: the folder has no MLmodel file"):
        loading.load_model(str(tmp_path), sqlite_uri(tmp_path))


def test_a_uri_into_a_store_that_does_not_exist_is_refused_without_making_one(tmp_path):
    with pytest.raises(ModelLoadError, match="no MLflow store at .* to look up models:/m@champion in"):
        loading.load_model("models:/m@champion", sqlite_uri(tmp_path / "mlruns"))
    assert not (tmp_path / "mlruns").exists()


def test_a_folder_loads_with_the_contract_saved_in_its_metadata(trained_on_raw, tmp_path):
    _, model, X, contract, _ = trained_on_raw
    folder = tmp_path / "model"
    mlflow.sklearn.save_model(model, str(folder), metadata={CONTRACT_KEY: json.dumps(contract.to_dict())}, pip_requirements=[], skops_trusted_types=trusted_types())
    loaded = loading.load_model(str(folder), sqlite_uri(tmp_path))
    assert loaded.contract == contract and loaded.warnings == ()
    assert (loaded.model.predict(X) == model.predict(X)).all()


def test_the_versions_that_saved_a_model_are_compared_with_the_installed_ones():
    older = Model(flavors={"sklearn": {"sklearn_version": "0.1"}})
    (warning,) = loading.version_warnings(older, "the export")
    assert warning.startswith(f"the export was saved with scikit-learn 0.1 but {sklearn.__version__} is installed")
    assert "install scikit-learn==0.1" in warning
    assert loading.version_warnings(Model(flavors={"sklearn": {"sklearn_version": sklearn.__version__}}), "the export") == ()


def test_a_malformed_contract_is_refused_with_the_fix():
    with pytest.raises(ModelLoadError, match="the data contract saved with the export is malformed .*; re-export the model"):
        loading.model_contract(Model(metadata={CONTRACT_KEY: "{not json"}), "the export")


@pytest.mark.slow
def test_a_model_saved_without_a_contract_is_served_with_its_signature(tmp_path: Path) -> None:
    X = pd.DataFrame({"a": [0.5, 1.5, 2.5, 3.5], "b": ["x", "y", "x", "y"]})
    encode = make_column_transformer((OneHotEncoder(), ["b"]), remainder="passthrough")
    model = make_pipeline(encode, LogisticRegression()).fit(X, [0, 1, 0, 1])
    # A plain MLflow model folder, as a user saves it without crispml: a signature, no contract.
    mlflow.sklearn.save_model(model, str(tmp_path / "model"), signature=infer_signature(X, model.predict(X)))
    scoring = loading.scoring_app(str(tmp_path / "model"), f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert scoring.contract == contract_from_signature(("a", "b"), ("a",))


@pytest.mark.slow
def test_the_mlmodel_file_holds_the_contract_as_one_json_string_and_the_older_tree_still_reads(penguins_run):
    folder = penguins_run.result.export_dir
    manifest = json.loads((folder / MANIFEST).read_text())
    model = Model.load(folder / "MLmodel")
    saved = model.metadata[CONTRACT_KEY]
    assert isinstance(saved, str) and json.loads(saved) == manifest[CONTRACT_KEY]  # a scalar, cheap for YAML to parse
    from_string = loading.model_contract(model, "the export")
    model.metadata = {CONTRACT_KEY: manifest[CONTRACT_KEY]}  # as models saved before 2026-12 have it
    assert loading.model_contract(model, "the export") == from_string
    assert from_string.features == tuple(c["name"] for c in manifest[CONTRACT_KEY]["columns"])
