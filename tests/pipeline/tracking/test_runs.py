"""The run records on their own (`pipeline.tracking.runs`): one parent run with nested candidates, what it logs, how it ends."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.errors import TrackingError
from pipeline.tracking import loading, registry, store
from pipeline.tracking import runs as tracking
from stages.contract import CONTRACT_KEY
from stages.model_registry import trusted_types

from conftest import sqlite_uri


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module's tests, each of which logs to an experiment of its own."""
    return sqlite_uri(tmp_path_factory.mktemp("runs"))


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


@pytest.mark.parametrize(("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_a_run_that_raises_ends_failed_and_an_interrupted_one_killed(uri, error, status):
    with pytest.raises(error), tracking.pipeline_run(uri, f"ends-{status.lower()}", "a run") as run:
        raise error("stopped by the test")
    assert MlflowClient(uri).get_run(run.run_id).info.status == status


def test_a_failed_candidate_is_a_failed_child_run_with_its_error(uri):
    with tracking.pipeline_run(uri, "failed-candidate", "a run") as run:
        child = run.log_candidate("svm", "SVC", {}, False, "exploded", {"accuracy": (math.nan,)}, {}, ("slow",))
    nested = MlflowClient(uri).get_run(child)
    assert nested.info.status == "FAILED" and nested.data.tags["crispml.status"] == "failed"
    assert nested.data.tags["crispml.error"] == "exploded" and nested.data.tags["crispml.warnings"] == "slow"
    assert nested.data.metrics == {}  # a NaN fold score is not logged


def test_params_are_cut_nan_metrics_skipped_and_artifacts_land_where_named(uri):
    with tracking.pipeline_run(uri, "logging", "a run") as run:
        run.log_params({"long": "x" * 7000, "folds": 3})
        run.log_metrics({"kept": 0.5, "skipped": math.nan})
        run.describe("linear 0.9000 go", "**Chosen:** `linear`")
        run.log_json({"seed": 7}, "config.json")
        run.log_frame(pd.DataFrame({"model": ["linear"]}), "leaderboard.csv")
        run.log_files({"a.png": b"\x89PNG"}, "plots")
        run.log_files({}, "empty")  # nothing to upload: no folder
    client = MlflowClient(uri)
    data = client.get_run(run.run_id).data
    assert len(data.params["long"]) == 6000 and data.params["folds"] == "3"
    assert data.metrics == {"kept": 0.5}
    assert data.tags[tracking.RUN_NAME_TAG] == "linear 0.9000 go" and data.tags[tracking.NOTE_TAG] == "**Chosen:** `linear`"
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"config.json", "leaderboard.csv", "plots"}
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/a.png"]


def test_a_new_experiment_opens_in_the_model_training_view_and_a_deleted_one_is_refused(uri):
    with tracking.pipeline_run(uri, "fresh", "a run") as run:
        pass
    client = MlflowClient(uri)
    assert client.get_experiment(run.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    client.delete_experiment(client.create_experiment("deleted"))
    with pytest.raises(TrackingError, match="experiment 'deleted' was deleted in"), tracking.pipeline_run(uri, "deleted", "a run"):
        pytest.fail("a run started in a deleted experiment")


def test_a_logged_model_takes_champion_only_when_its_run_commits_and_loads_by_uri_checked(uri, trained_on_raw):
    raw, model, _, contract, _ = trained_on_raw
    client = MlflowClient(uri, registry_uri=uri)
    with tracking.pipeline_run(uri, "registered", "a run") as run:
        logged = run.log_model(model, raw.loc[:, list(contract.inputs)], [], trusted_types(), {CONTRACT_KEY: contract.to_dict()})
        version = run.register(logged, "registered", description="the chosen model", model_description="what it is")
        assert version.registered_name == "registered" and version.version == "1"
        assert registry.alias_version(client, "registered", registry.CHAMPION) is None  # not before the commit
    assert registry.alias_version(client, "registered", registry.CHAMPION) == "1"
    registered = client.get_model_version("registered", "1")
    assert registered.tags["crispml.run_id"] == run.run_id and registered.description == "the chosen model"
    assert client.get_registered_model("registered").description == "what it is"
    assert loading.FILES_TAG in client.get_logged_model(logged.uri.removeprefix("models:/")).tags
    loaded = loading.load_model("models:/registered@champion", uri)
    assert loaded.warnings == () and loaded.contract == contract


@pytest.mark.slow
def test_the_experiment_names_its_primary_metric_for_the_ui_and_keeps_a_users_own(penguins_run):
    client = MlflowClient(penguins_run.tracking_uri)
    experiment = client.get_experiment_by_name(penguins_run.result.experiment)
    assert experiment.tags["mlflow.experiment.primaryMetric.name"] == "holdout_balanced_accuracy"
    run = tracking.PipelineRun(client, experiment.experiment_id, penguins_run.result.run_id, penguins_run.tracking_uri)
    client.set_experiment_tag(experiment.experiment_id, "mlflow.experiment.primaryMetric.name", "my_metric")
    run.mark_primary_metric("accuracy")  # a later run leaves the user's choice alone
    assert client.get_experiment(experiment.experiment_id).tags["mlflow.experiment.primaryMetric.name"] == "my_metric"
    client.set_experiment_tag(experiment.experiment_id, "mlflow.experiment.primaryMetric.name", "holdout_balanced_accuracy")
