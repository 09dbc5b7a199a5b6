"""The tracking store on its own (`pipeline.tracking.store`): its URI, its health checked before use, MLflow pointed at it."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.errors import TrackingError
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


def test_sqlite_file_keeps_a_relative_path_relative_and_an_in_memory_store_is_left_alone():
    assert store.sqlite_file("sqlite:///mlruns/mlflow.db") == Path("mlruns/mlflow.db")
    assert store.sqlite_file("sqlite:////abs/mlflow.db") == Path("/abs/mlflow.db")
    assert store.for_mlflow("sqlite:///:memory:") == "sqlite:///:memory:"


def test_artifacts_go_beside_a_sqlite_file_and_a_server_chooses_its_own(tmp_path):
    assert store.artifact_root(sqlite_uri(tmp_path / "mlruns")) == (tmp_path / "mlruns").resolve().as_uri()
    assert store.artifact_root("http://127.0.0.1:5000") is None


def test_an_unknown_scheme_is_refused_with_the_likely_one():
    with pytest.raises(TrackingError, match=r"unknown scheme 'sqlit'; did you mean 'sqlite'\?"):
        store.check_store("sqlit:///mlruns/mlflow.db")


def test_a_sqlite_database_that_is_not_an_mlflow_store_is_refused_naming_its_tables(tmp_path):
    database = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(TrackingError, match=r"is an SQLite database but not an MLflow store \(its tables: customers\)"):
        store.check_store(f"sqlite:///{database}")
    with sqlite3.connect(database) as connection:  # left as it was
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]


@pytest.mark.parametrize(("value", "seconds"), [("7", 7), (None, int(store.HTTP_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"]))])
def test_http_timeout_reads_the_variable_or_crispmls_default(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", value)
    assert store.http_timeout() == seconds


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "soon"])
def test_http_timeout_refuses_what_is_not_a_positive_whole_number(monkeypatch, value):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", value)
    with pytest.raises(TrackingError, match=f"MLFLOW_HTTP_REQUEST_TIMEOUT={value!r} is not a positive whole number"):
        store.http_timeout()


def test_pointing_mlflow_at_a_store_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = mlflow.get_tracking_uri()
    uri = sqlite_uri(tmp_path / "mlruns")
    try:
        store.point_mlflow_at(uri)
        assert mlflow.get_tracking_uri() == store.for_mlflow(uri)
        assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    finally:
        store.point_mlflow_at(before)


def test_quiet_mlflow_silences_its_loggers_in_the_block_only():
    logger = logging.getLogger("mlflow")
    level = logger.level
    with store.quiet_mlflow():
        assert logger.level > logging.CRITICAL
    assert logger.level == level


def test_experiment_id_finds_only_a_live_experiment(tmp_path):
    uri = sqlite_uri(tmp_path / "mlruns")
    store.check_store(uri, writable=True)
    client = MlflowClient(store.for_mlflow(uri))
    live = client.create_experiment("live")
    client.delete_experiment(client.create_experiment("gone"))
    assert store.experiment_id(uri, "live") == live
    assert store.experiment_id(uri, "gone") is None and store.experiment_id(uri, "never") is None
