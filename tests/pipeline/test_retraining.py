"""Scheduled retraining on the shipped data: a new model takes `champion` only when it is not worse.

Each scenario trains twice in one store: a first run on part of penguins makes the
champion; a second run on the other rows (fresh data, as a scheduler brings) either is
as good (it takes `champion` and the export) or is made worse on purpose with a one-unit
MLP (it becomes `challenger`; the champion and its export stay).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.exports import MANIFEST
from pipeline.runner import run
from stages import challenge

from conftest import DEFAULT_DATA, config_for

CRISPML = Path(sys.executable).parent / "crispml"
FAST = {"modeling.models": ["baseline", "linear"], "modeling.folds": 3}
WORSE = ["--models", "mlp", "--folds", "3"]  # with mlp_hidden_layers = [1] in the config: clearly worse


def halves(tmp: Path) -> tuple[Path, Path]:
    """The shipped penguins, shuffled, as two files of different rows: this month's and next month's."""
    rows = pd.read_csv(DEFAULT_DATA).sample(frac=1.0, random_state=0).reset_index(drop=True)
    first, second = tmp / "first.csv", tmp / "second.csv"
    rows.iloc[:200].to_csv(first, index=False)
    rows.iloc[200:].to_csv(second, index=False)
    return first, second


def registry(config) -> MlflowClient:
    return MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)


def alias(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias("penguins", name).version)


def crispml(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [str(CRISPML), "run", *args, "--json"], cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_a_second_run_made_worse_on_purpose_is_a_challenger_and_the_champion_and_its_export_stay(tmp_path):
    first, second = halves(tmp_path)
    common = ["--target", "species", "--experiment", "penguins"]
    proc = crispml(tmp_path, "--data", str(first), *common, "--models", "baseline,linear", "--folds", "3")
    assert proc.returncode == 0, proc.stderr
    champion = json.loads(proc.stdout)
    assert champion["challenge"]["outcome"] == challenge.FIRST and champion["challenge"]["alias"] == "champion"
    export = tmp_path / "models" / "penguins" / "model"
    before = (export / MANIFEST).read_bytes()

    (tmp_path / "worse.toml").write_text("[modeling]\nmlp_hidden_layers = [1]\n")
    proc = crispml(tmp_path, "--config", "worse.toml", "--data", str(second), *common, *WORSE)
    assert proc.returncode == 4, proc.stderr  # the documented exit code of a challenger
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("crispml: challenger: the new model may be worse than champion version 1: balanced_accuracy")
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    c = out["challenge"]
    assert c["outcome"] == challenge.CHALLENGER and c["alias"] == "challenger" and c["champion_version"] == "1"
    assert c["rows"] == 29 and c["rows_left_out"] == 0  # every holdout row (20% of 144) is new to the champion
    assert c["champion_score"] - c["new_score"] > 0.1 and c["p_worse"] > 0.05
    assert out["decision"] == "go" and out["export_path"] is None
    assert out["registered_model_uri"] == "models:/penguins@challenger"

    uri = "sqlite:///" + str(tmp_path / "mlruns" / "mlflow.db")
    client = MlflowClient(uri, registry_uri=uri)  # not the registry another test pointed MLflow at
    assert alias(client, "champion") == "1" and alias(client, "challenger") == "2"
    assert (export / MANIFEST).read_bytes() == before  # the export is still the champion's
    run2 = client.get_run(out["run_id"])
    assert run2.info.status == "FINISHED" and run2.data.tags["crispml.challenge"] == challenge.CHALLENGER
    assert run2.data.metrics["champion_holdout_score"] == pytest.approx(c["champion_score"])
    assert run2.data.tags["mlflow.runName"].split()[2] == "challenger"
    assert "Against the champion" in run2.data.tags["mlflow.note.content"]
    card = Path(mlflow.artifacts.download_artifacts(run_id=out["run_id"], artifact_path="model_card.md", tracking_uri=uri))
    text = card.read_text()
    assert "## Against the champion" in text and "Registered as `challenger`" in text and "not exported" in text
    recorded = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=out["run_id"], artifact_path="challenge.json", tracking_uri=uri)).read_text()
    )
    assert recorded == c


@pytest.mark.slow
def test_a_second_run_as_good_on_fresh_rows_takes_champion_and_the_export(tmp_path):
    first, second = halves(tmp_path)
    one = run(config_for(tmp_path, first, **{"tracking.experiment": "penguins", **FAST}))
    two = run(config_for(tmp_path, second, **{"tracking.experiment": "penguins", **FAST}))
    assert one.challenge.outcome == challenge.FIRST
    c = two.challenge
    assert c.outcome == challenge.PROMOTED and c.promoted and not two.challenger, c.reason
    assert c.rows == two.evaluation.n_test and c.rows_left_out == 0  # fresh rows: the champion saw none of them
    assert c.p_worse <= 0.05
    client = registry(config_for(tmp_path))
    assert alias(client, "champion") == "2"
    manifest = json.loads((two.export_dir / MANIFEST).read_text())
    assert manifest["mlflow"]["run_id"] == two.run_id and manifest["challenge"]["outcome"] == challenge.PROMOTED


@pytest.mark.slow
def test_the_same_data_twice_compares_on_the_champions_own_holdout_predictions(tmp_path):
    # The champion was refitted on every row, this holdout's too: its predictions of them
    # come from the model that had not seen them, kept in its run's record.
    config = config_for(tmp_path, **FAST)
    run(config)
    again = run(config)
    c = again.challenge
    assert c.outcome == challenge.PROMOTED and c.rows == again.evaluation.n_test and c.rows_left_out == 0
    assert c.new_score == c.champion_score and c.p_worse == 0.0
    # Another seed splits other rows off: those the champion learnt from are left out.
    other = run(config_for(tmp_path, **FAST, seed=7))
    assert other.challenge.rows_left_out > 0
    assert other.challenge.rows + other.challenge.rows_left_out == other.evaluation.n_test


@pytest.mark.slow
def test_a_champion_that_cannot_score_the_new_data_is_replaced_and_the_reason_says_why(tmp_path):
    first, second = halves(tmp_path)
    run(config_for(tmp_path, first, **{"tracking.experiment": "penguins", **FAST}))
    fewer = tmp_path / "fewer.csv"
    pd.read_csv(second).drop(columns=["bill_length_mm"]).to_csv(fewer, index=False)
    result = run(config_for(tmp_path, fewer, **{"tracking.experiment": "penguins", **FAST}))
    c = result.challenge
    assert c.outcome == challenge.NOT_COMPARED and c.promoted
    assert "champion version 1 needs column(s) the new data lacks: bill_length_mm" in c.reason
    assert alias(registry(config_for(tmp_path)), "champion") == "2" and result.export_dir is not None


@pytest.mark.slow
def test_no_challenge_lets_a_worse_model_take_champion(tmp_path):
    first, second = halves(tmp_path)
    run(config_for(tmp_path, first, **{"tracking.experiment": "penguins", **FAST}))
    worse = run(
        config_for(
            tmp_path, second, **{"tracking.experiment": "penguins", "modeling.models": ["mlp"], "modeling.folds": 3,
                                 "modeling.mlp_hidden_layers": [1], "deployment.challenge": False}
        )
    )
    assert worse.challenge.outcome == challenge.NOT_CHALLENGED and worse.export_dir is not None
    assert alias(registry(config_for(tmp_path)), "champion") == "2"


@pytest.mark.slow
def test_a_champion_without_its_record_is_replaced_uncompared_rather_than_judged_on_rows_it_learnt(tmp_path):
    config = config_for(tmp_path, **FAST)
    first = run(config)
    records = list((tmp_path / "mlruns").rglob("record.npz"))
    assert len(records) == 1 and first.run_id in str(records[0])
    records[0].unlink()  # as a champion logged before records were kept
    again = run(config)
    assert again.challenge.outcome == challenge.NOT_COMPARED and again.challenge.promoted
    assert "champion version 1 has no challenge/record.npz of the rows it learnt from" in again.challenge.reason
    assert alias(registry(config), "champion") == "2"


@pytest.mark.slow
def test_a_champion_record_edited_in_the_store_is_not_used(tmp_path):
    config = config_for(tmp_path, **FAST)
    run(config)
    record = next((tmp_path / "mlruns").rglob("record.npz"))
    record.write_bytes(record.read_bytes() + b"\0")  # any change to the file
    again = run(config)
    assert again.challenge.outcome == challenge.NOT_COMPARED
    assert "has a challenge/record.npz that does not match the SHA-256 its run recorded" in again.challenge.reason
