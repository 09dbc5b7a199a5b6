"""The store and the run records on their own: a store checked before use, one parent run with nested candidates."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pipeline.errors import TrackingError
from pipeline.tracking import runs as tracking
from pipeline.tracking import store

from conftest import sqlite_uri


def test_a_relative_sqlite_store_is_handed_to_mlflow_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.for_mlflow("sqlite:///mlruns/mlflow.db") == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert store.for_mlflow("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert store.sqlite_file("http://127.0.0.1:5000") is None


def test_a_store_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TrackingError) as refused:
        store.check_store(sqlite_uri(tmp_path / "file"), writable=True)
    assert "\n" not in str(refused.value)


def test_a_run_is_one_parent_with_a_nested_run_per_candidate(tmp_path):
    uri = sqlite_uri(tmp_path / "mlruns")
    store.check_store(uri, writable=True)
    with tracking.pipeline_run(uri, "exp", "a run") as run:
        child = run.log_candidate("linear", "LogisticRegression", {"C": "1.0"}, True, "", {"accuracy": (0.8, 0.9)},
                                  {"accuracy_mean": 0.85}, ())
        assert run.champion("exp") is None  # nothing registered yet
    client = MlflowClient(uri)
    parent, nested = client.get_run(run.run_id), client.get_run(child)
    assert parent.info.status == "FINISHED" and nested.data.tags["mlflow.parentRunId"] == run.run_id
    assert nested.data.metrics["accuracy_mean"] == 0.85
    assert [(m.step, m.value) for m in client.get_metric_history(child, "fold_accuracy")] == [(0, 0.8), (1, 0.9)]
