"""The runner end to end, with MLflow pointed at a temporary SQLite store."""

import json
import re

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_diabetes

from pipeline.exports import MANIFEST
from pipeline.files import sha256_of
from pipeline.runner import run
from stages import model_registry, modeling

from conftest import config_for

pytestmark = pytest.mark.slow

CANDIDATES = {"baseline", "linear", "svm", "random_forest", "adaboost", "mlp", "gradient_boosting"}


def children(client: MlflowClient, run_id: str, experiment_id: str):
    return client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")


def test_parent_run_holds_profile_leaderboard_holdout_and_model(penguins_run):
    result = penguins_run.result
    client = MlflowClient(penguins_run.tracking_uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["crispml.task"] == "multiclass"
    assert parent.data.tags["crispml.chosen_model"] == result.evaluation.model
    assert parent.data.params["modeling.folds"] == "5"
    assert parent.data.metrics["holdout_balanced_accuracy"] == pytest.approx(result.evaluation.holdout["balanced_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(result.run_id)} | {
        a.path for a in client.list_artifacts(result.run_id, "understanding")
    }
    assert {"config.json", "leaderboard.csv", "manifest.json", "understanding/profile.json", "understanding/profile.md"} <= artifacts
    assert {"understanding/profile.html", "model_card.html"} <= artifacts  # pages the artifact viewer shows with their plots
    page = open(mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="understanding/profile.html", tracking_uri=penguins_run.tracking_uri
    ), encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    board = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="leaderboard.csv", tracking_uri=penguins_run.tracking_uri))
    assert set(board["model"]) == CANDIDATES and board.loc[board["chosen"], "model"].tolist() == [result.evaluation.model]
    # Artifacts live beside the SQLite file, not in the working directory.
    assert parent.info.artifact_uri.startswith((penguins_run.tmp / "mlruns").as_uri())


def test_one_child_run_per_candidate_with_fold_scores(penguins_run):
    result = penguins_run.result
    client = MlflowClient(penguins_run.tracking_uri)
    experiment_id = client.get_run(result.run_id).info.experiment_id
    runs = children(client, result.run_id, experiment_id)
    assert {r.info.run_name for r in runs} == CANDIDATES
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["crispml.status"] == "ok"
        history = client.get_metric_history(r.info.run_id, "fold_balanced_accuracy")
        assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
        row = next(c for c in result.leaderboard.rows if c.name == r.info.run_name)
        assert r.data.metrics["balanced_accuracy_mean"] == pytest.approx(row.mean("balanced_accuracy"))
        assert r.data.params.get("crispml.strategy", "") == row.strategy  # what it did about data size, where it did something
    assert any(r.data.params.get("crispml.strategy") == "exact RBF kernel" for r in runs)
    svm = next(r for r in runs if r.info.run_name == "svm").data.params
    assert svm["estimator"] == "SVC" and svm["estimator__C"] == "1" and svm["estimator__kernel"] == "rbf"  # in full, nested
    mlp = next(r for r in runs if r.info.run_name == "mlp").data.params
    assert mlp["hidden_layer_sizes"] == "[64, 32]" and mlp["activation"] == "relu"
    linear = next(r for r in runs if r.info.run_name == "linear").data.params
    assert "penalty" not in linear and linear["C"] == "1"  # scikit-learn's "deprecated" placeholder is left out


def test_champion_alias_points_at_this_run(penguins_run):
    client = MlflowClient(penguins_run.tracking_uri, registry_uri=penguins_run.tracking_uri)
    version = client.get_model_version_by_alias("penguins", "champion")
    assert version.tags["crispml.run_id"] == penguins_run.result.run_id
    assert penguins_run.result.registered == "models:/penguins@champion"


def test_exported_folder_registry_and_logged_model_predict_the_same(penguins_run):
    result = penguins_run.result
    rows = pd.read_csv(penguins_run.config.data.path).drop(columns="species")  # `year` as pandas reads it: int64
    mlflow.set_tracking_uri(penguins_run.tracking_uri)
    mlflow.set_registry_uri(penguins_run.tracking_uri)
    outputs = []
    for source in [str(result.export_dir), result.registered, result.model_uri]:
        outputs.append(mlflow.pyfunc.load_model(source).predict(rows))
        proba = mlflow.sklearn.load_model(source).predict_proba(rows)
        assert proba.shape == (len(rows), 3)
    assert all(o.equals(outputs[0]) for o in outputs)
    assert set(outputs[0]["prediction"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert list(outputs[0].columns) == ["prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]


def test_export_has_joblib_and_a_manifest_whose_hashes_match(penguins_run):
    import joblib

    folder = penguins_run.result.export_dir
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["model"] == penguins_run.result.evaluation.model
    assert manifest["data"]["sha256"] == sha256_of(penguins_run.config.data.path)
    assert manifest["mlflow"]["run_id"] == penguins_run.result.run_id
    assert manifest["packages"]["scikit-learn"] and manifest["seed"] == 42
    model_params = joblib.load(folder / "model.joblib").steps[-1][1].get_params()
    assert manifest["hyperparameters"] and all(
        manifest["hyperparameters"][k] == (list(v) if isinstance(v, tuple) else v)
        for k, v in model_params.items()
        if k in manifest["hyperparameters"] and not hasattr(v, "get_params")
    )
    card = (folder / "model_card.md").read_text()
    assert f"The chosen model's hyperparameters ({manifest['estimator']})" in card
    assert not re.search(r"[`\"(]/", card) and "- file: `penguins.csv`" in card  # no absolute path of the training machine
    assert 'mlflow.pyfunc.load_model("models:/penguins@champion")' in card  # the registry's name travels, a path does not
    assert {"MLmodel", "model.skops", "model.joblib"} <= set(manifest["files"])
    for name, digest in manifest["files"].items():
        assert sha256_of(folder / name) == digest
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    model = joblib.load(folder / "model.joblib")
    assert list(model.classes_) == manifest["classes"]


def test_same_seed_gives_the_same_leaderboard(tmp_path):
    kwargs = {"modeling.models": ["baseline", "linear", "random_forest", "mlp"], "modeling.folds": 3}
    first = run(config_for(tmp_path / "a", **kwargs)).leaderboard
    second = run(config_for(tmp_path / "b", **kwargs)).leaderboard
    assert [r.name for r in first.rows] == [r.name for r in second.rows]
    assert [r.fold_scores for r in first.rows] == [r.fold_scores for r in second.rows]


def test_a_rerun_replaces_the_export_and_moves_the_alias(tmp_path):
    config = config_for(tmp_path, **{"modeling.models": ["baseline", "linear"], "modeling.folds": 3})
    first = run(config)
    second = run(config)
    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    assert str(client.get_model_version_by_alias("penguins", "champion").version) == "2"
    manifest = json.loads((second.export_dir / MANIFEST).read_text())
    assert manifest["mlflow"]["run_id"] == second.run_id != first.run_id


def test_regression_on_diabetes(tmp_path):
    data = load_diabetes(as_frame=True).frame
    path = tmp_path / "diabetes.csv"
    data.to_csv(path, index=False)
    result = run(config_for(tmp_path, path, **{"business.target": "target", "modeling.folds": 3}))
    assert result.profile.task == "regression" and result.leaderboard.metric == "r2"
    assert {r.name for r in result.leaderboard.rows} == CANDIDATES
    best = result.leaderboard.best
    assert best.name != "baseline" and best.mean("r2") > 0.35
    assert set(result.evaluation.holdout) == {"r2", "rmse", "mae"}


def test_binary_target_with_missing_labels(tmp_path):
    config = config_for(
        tmp_path, **{"business.target": "sex", "modeling.models": ["baseline", "linear", "random_forest"], "modeling.folds": 3}
    )
    result = run(config)
    assert result.profile.task == "binary" and result.leaderboard.metric == "roc_auc"
    assert result.profile.target_missing == 11
    assert result.evaluation.n_train + result.evaluation.n_test == 333
    assert result.leaderboard.best.mean("roc_auc") > 0.8


class _Exploding(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        raise RuntimeError("exploded on purpose")


def test_a_failing_candidate_is_a_failed_child_run_and_the_run_finishes(tmp_path, monkeypatch):
    monkeypatch.setitem(model_registry.MODELS, "svm", model_registry.ModelSpec(lambda s: _Exploding(), lambda s: _Exploding()))
    config = config_for(tmp_path, **{"modeling.models": ["baseline", "linear", "svm"], "modeling.folds": 3, "modeling.n_jobs": 1})
    result = run(config)
    failed = next(r for r in result.leaderboard.rows if r.name == "svm")
    assert failed.status == "failed" and "exploded on purpose" in failed.error
    client = MlflowClient(config.tracking_uri)
    experiment_id = client.get_run(result.run_id).info.experiment_id
    child = next(r for r in children(client, result.run_id, experiment_id) if r.info.run_name == "svm")
    assert child.info.status == "FAILED" and "exploded on purpose" in child.data.tags["crispml.error"]
    assert client.get_run(result.run_id).info.status == "FINISHED"
    assert result.evaluation.model == "linear"


@pytest.fixture(scope="module")
def curved(tmp_path_factory):
    """A target a line cannot follow and a forest can: the linear model is out of the running early."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(400, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["y"] = np.sin(2 * frame["a"]) * 10 + np.abs(frame["b"]) * 5 + rng.normal(0, 0.5, 400)
    path = tmp_path_factory.mktemp("curved") / "curved.csv"
    frame.to_csv(path, index=False)
    return path


def _race_config(tmp, data, race):
    models = ["baseline", "linear", "random_forest"]
    return config_for(tmp, data, **{"business.target": "y", "modeling.models": models, "modeling.race": race})


def test_a_raced_out_candidate_is_a_finished_child_run_that_says_why_and_racing_off_runs_every_fold(tmp_path, curved):
    raced = run(_race_config(tmp_path / "race", curved, True))
    rows = {r.name: r for r in raced.leaderboard.rows}
    assert rows["linear"].status == modeling.RACED_OUT
    kept = len(rows["linear"].fold_scores["r2"])
    assert kept < 5 and rows["linear"].error.startswith(f"raced out after {kept} of 5 folds")
    assert rows["random_forest"].status == rows["baseline"].status == modeling.OK
    client = MlflowClient(_race_config(tmp_path / "race", curved, True).tracking_uri)
    experiment_id = client.get_run(raced.run_id).info.experiment_id
    child = next(r for r in children(client, raced.run_id, experiment_id) if r.info.run_name == "linear")
    assert child.info.status == "FINISHED"
    assert child.data.tags["crispml.status"] == "raced_out"
    assert child.data.tags["crispml.raced_out"] == rows["linear"].error
    board = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=raced.run_id, artifact_path="leaderboard.csv",
                                                            tracking_uri=client.tracking_uri))
    assert board.set_index("model").loc["linear", "status"] == "raced_out"
    card = (raced.export_dir / "model_card.md").read_text()
    assert f"(first {kept} folds)" in card and "raced out: on the same folds it scored" in card

    full = run(_race_config(tmp_path / "full", curved, False))
    assert all(r.status == modeling.OK and len(r.fold_scores["r2"]) == 5 for r in full.leaderboard.rows)
    assert full.evaluation.model == raced.evaluation.model == "random_forest"
    same = {r.name: r.fold_scores for r in full.leaderboard.rows if r.name != "linear"}
    assert same == {r.name: r.fold_scores for r in raced.leaderboard.rows if r.name != "linear"}


def test_the_ui_can_tell_runs_apart_and_the_registry_says_what_each_version_is(penguins_run):
    result = penguins_run.result
    client = MlflowClient(penguins_run.tracking_uri, registry_uri=penguins_run.tracking_uri)
    run = client.get_run(result.run_id)
    chosen, score = result.selection.chosen, result.evaluation.holdout["balanced_accuracy"]
    assert run.info.run_name.startswith(f"{chosen} {score:.4f} go ")  # not "species <date>" for all
    note = run.data.tags["mlflow.note.content"]
    assert f"**Chosen:** `{chosen}`" in note and result.selection.reason in note and "**Gate:** go" in note
    assert sha256_of(penguins_run.config.data.path) in note and "`penguins.csv`" in note
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the model-training view, not GenAI
    version = client.get_model_version_by_alias("penguins", "champion")
    assert version.description == note
    assert "predict `species` (multiclass)" in client.get_registered_model("penguins").description
