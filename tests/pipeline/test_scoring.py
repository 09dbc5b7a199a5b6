"""Batch scoring on its own (`pipeline.scoring.predict`): an exported folder scores a raw file, every row in order."""

from __future__ import annotations

import json

import mlflow.sklearn
import pandas as pd
import pytest

from pipeline import scoring
from pipeline.errors import DataError, ModelLoadError, UsageError
from pipeline.exports import export_model_dir
from stages.contract import CONTRACT_KEY
from stages.model_registry import trusted_types

from conftest import sqlite_uri


def test_an_export_scores_the_raw_file_as_training_read_it(trained_on_raw, tmp_path):
    raw, model, X, contract, _ = trained_on_raw
    metadata = {CONTRACT_KEY: json.dumps(contract.to_dict())}
    folder = export_model_dir(
        tmp_path / "models" / "raw" / "model",
        lambda into: mlflow.sklearn.save_model(model, str(into), skops_trusted_types=trusted_types(), pip_requirements=[], metadata=metadata),
        model,
        {"seed": 0},
    )
    raw.to_csv(tmp_path / "raw.csv", index=False)
    done = scoring.predict(str(folder), tmp_path / "raw.csv", tmp_path / "scored.csv", sqlite_uri(tmp_path), overwrite=False)
    scored = pd.read_csv(tmp_path / "scored.csv", dtype=str)
    assert done.rows == len(raw) == len(scored)
    assert list(scored.columns) == [*raw.columns, "prediction", "proba_no", "proba_yes"]
    assert scored[list(raw.columns)].equals(raw.astype(str))  # the input's cells as they were, in order
    assert (scored["prediction"].to_numpy() == model.predict(X)).all()  # '?', '76,630' and dates read as in training
    assert done.check.ignored == ("y",) and any("ignored for scoring: y" in w for w in done.warnings)
    assert not (tmp_path / "mlflow.db").exists()  # a folder needs no store


def test_the_input_file_is_never_the_output(tmp_path):
    (tmp_path / "rows.csv").write_text("x\n1\n")
    with pytest.raises(DataError, match="is the input file; write the scores to another file"):
        scoring.predict("no-model", tmp_path / "rows.csv", tmp_path / "." / "rows.csv", sqlite_uri(tmp_path), overwrite=True)
    assert (tmp_path / "rows.csv").read_text() == "x\n1\n"


def test_an_existing_output_is_refused_before_the_model_is_looked_at(tmp_path):
    (tmp_path / "scored.csv").write_text("precious\n")
    with pytest.raises(UsageError, match="already exists; choose another --out or pass --overwrite"):
        scoring.predict(str(tmp_path / "no-model"), tmp_path / "rows.csv", tmp_path / "scored.csv", sqlite_uri(tmp_path), overwrite=False)
    assert (tmp_path / "scored.csv").read_text() == "precious\n"


def test_a_model_folder_is_checked_against_its_manifest_before_anything_is_loaded(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(ModelLoadError, match="has no manifest.json"):
        scoring.predict(str(tmp_path / "model"), tmp_path / "rows.csv", tmp_path / "scored.csv", sqlite_uri(tmp_path), overwrite=False)
    assert not (tmp_path / "scored.csv").exists()
