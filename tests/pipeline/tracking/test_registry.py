"""The model registry on its own (`pipeline.tracking.registry`): the champion and its record, and undoing a run's version."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.errors import TrackingError
from pipeline.tracking import registry
from pipeline.tracking import runs as tracking

from conftest import sqlite_uri


@pytest.fixture(scope="module")
def mlruns(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str, str]:
    """A SQLite store with one experiment: (client, tracking URI, experiment id); each test registers its own model."""
    folder = tmp_path_factory.mktemp("registry")
    uri = sqlite_uri(folder)
    client = MlflowClient(uri, registry_uri=uri)
    return client, uri, client.create_experiment("registry", artifact_location=folder.as_uri())  # not ./mlruns


def new_version(mlruns: tuple[MlflowClient, str, str], name: str) -> tuple[str, str]:
    """A run and a version of model `name` that it logged: (run id, version)."""
    client, _, experiment = mlruns
    run_id = client.create_run(experiment).info.run_id
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return run_id, str(client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version)


def test_a_model_that_is_not_registered_or_has_no_champion_has_none(mlruns):
    client, uri, _ = mlruns
    assert registry.find_champion(client, "never-registered", uri) is None
    new_version(mlruns, "no-alias")
    assert registry.find_champion(client, "no-alias", uri) is None
    assert registry.alias_version(client, "no-alias", registry.CHAMPION) is None


def test_the_champion_is_its_version_and_run_and_its_record_is_used_only_as_sealed(mlruns):
    client, uri, experiment = mlruns
    run_id, version = new_version(mlruns, "sealed")
    client.set_registered_model_alias("sealed", registry.CHAMPION, version)
    found = registry.find_champion(client, "sealed", uri)
    assert (found.version, found.run_id, found.uri) == (version, run_id, f"models:/sealed/{version}")
    assert found.record is None and found.record_problem == ""  # a model logged before records were kept

    tracking.PipelineRun(client, experiment, run_id, uri).log_champion_record(b"the holdout predictions")
    assert registry.find_champion(client, "sealed", uri).record == b"the holdout predictions"

    client.set_tag(run_id, registry.CHAMPION_RECORD_TAG, "0" * 64)  # the record changed in the store
    edited = registry.find_champion(client, "sealed", uri)
    assert edited.record is None and "does not match the SHA-256 its run recorded" in edited.record_problem
    client.delete_tag(run_id, registry.CHAMPION_RECORD_TAG)
    assert "was never sealed" in registry.find_champion(client, "sealed", uri).record_problem


def test_undoing_a_registration_puts_the_alias_back_and_deletes_only_that_runs_version(mlruns):
    client, _, _ = mlruns
    _, first = new_version(mlruns, "undone")
    client.set_registered_model_alias("undone", registry.CHAMPION, first)
    run_id, second = new_version(mlruns, "undone")
    client.set_registered_model_alias("undone", registry.CHAMPION, second)  # as the failed run's commit did
    registry.undo_registration(client, run_id, "undone", second, registry.CHAMPION, first)
    assert registry.alias_version(client, "undone", registry.CHAMPION) == first
    assert [str(v.version) for v in client.search_model_versions("name = 'undone'")] == [first]


def test_undoing_an_alias_that_named_no_version_before_removes_it(mlruns):
    client, _, _ = mlruns
    run_id, version = new_version(mlruns, "first-champion")
    client.set_registered_model_alias("first-champion", registry.CHALLENGER, version)
    registry.undo_registration(client, run_id, "first-champion", version, registry.CHALLENGER, None)
    assert registry.alias_version(client, "first-champion", registry.CHALLENGER) is None
    assert client.search_model_versions("name = 'first-champion'") == []


class _BrokenRegistry:
    """A client whose registry answers every lookup with a server error."""

    def get_model_version_by_alias(self, name: str, alias: str) -> None:
        raise mlflow.exceptions.MlflowException("database is locked", error_code="INTERNAL_ERROR")


def test_a_registry_that_cannot_be_read_is_a_tracking_error_not_no_champion():
    with pytest.raises(TrackingError, match=r"cannot look up the champion of `m` in the registry at http://h \(database is locked\)"):
        registry.find_champion(_BrokenRegistry(), "m", "http://h")
