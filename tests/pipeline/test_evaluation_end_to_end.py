"""Evaluation a team can trust, end to end: selection, plots, the model card and the go/no-go gate."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from matplotlib.image import imread
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.errors import ConfigError
from pipeline.exports import MANIFEST
from pipeline.files import sha256_of
from pipeline.runner import run
from stages import modeling

from conftest import config_for

CRISPML = Path(sys.executable).parent / "crispml"
CLASSIFICATION_PLOTS = {"confusion_matrix.png", "roc_curve.png", "precision_recall.png", "calibration.png"}
REGRESSION_PLOTS = {"predicted_vs_actual.png", "residuals.png"}
ALL_TASKS_PLOTS = {"cv_scores.png", "permutation_importance.png"}
FAST = {"modeling.folds": 3}


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels[..., :3].std() > 0.05, path


def download(tracking_uri: str, run_id: str, path: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=tracking_uri))


def pngs(folder: Path) -> set[str]:
    found = {p.name for p in folder.glob("*.png")}
    for name in found:
        assert_png(folder / name)
    return found


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_go_run_then_a_no_go_rerun_leaves_the_champion_and_the_export_untouched(tmp_path):
    models = {"modeling.models": ["baseline", "linear"], **FAST}
    go = run(config_for(tmp_path, **models))
    uri = config_for(tmp_path).tracking_uri
    client = MlflowClient(uri, registry_uri=uri)

    # The go run: tags, decision, plots of a multiclass task, the export with its card and plots.
    assert go.decision.go and go.decision.reasons == () and go.registered == "models:/penguins@champion"
    tags = client.get_run(go.run_id).data.tags
    assert tags["crispml.decision"] == "go" and tags["crispml.chosen_model"] == "linear"
    assert tags["crispml.selection_rule"] == "simplest_equivalent" and "linear" in tags["crispml.selection_reason"]
    assert json.loads(download(uri, go.run_id, "decision.json").read_text())["decision"] == "go"
    assert pngs(download(uri, go.run_id, "plots")) == CLASSIFICATION_PLOTS | ALL_TASKS_PLOTS
    understanding = download(uri, go.run_id, "understanding")
    assert pngs(understanding) == {"target_distribution.png", "missing_values.png"}
    assert "![Missing values](missing_values.png)" in (understanding / "profile.md").read_text()
    board = pd.read_csv(download(uri, go.run_id, "leaderboard.csv"))
    assert {"diff_vs_top", "p_value", "within_noise", "chosen"} <= set(board.columns)
    assert board.loc[board["chosen"], "model"].tolist() == ["linear"] and board.loc[0, "p_value"] == 1.0
    assert board.set_index("model").loc["baseline", "p_value"] < 0.05

    folder = go.export_dir
    assert pngs(folder / "plots") == CLASSIFICATION_PLOTS | ALL_TASKS_PLOTS
    card = (folder / "model_card.md").read_text()
    assert "**Model:** `linear`" in card and "**Decision: GO**" in card
    assert card == download(uri, go.run_id, "model_card.md").read_text()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {"model_card.md", "plots/roc_curve.png", "plots/cv_scores.png"} <= set(manifest["files"])
    for name, digest in manifest["files"].items():
        assert sha256_of(folder / name) == digest
    assert manifest["decision"]["decision"] == "go" and manifest["selection"]["chosen"] == "linear"
    before = snapshot(folder)

    # The same experiment again, with a margin over the baseline no model can reach (1.0 - 1/3 < 0.9).
    nogo = run(config_for(tmp_path, **models, **{"business.min_margin_over_baseline": 0.9}))
    assert not nogo.decision.go and nogo.export_dir is None and nogo.registered == ""
    assert len(nogo.decision.reasons) == 1 and "more than 0.9 is required" in nogo.decision.reasons[0]
    assert snapshot(folder) == before  # the deployed model is untouched
    champion = client.get_model_version_by_alias("penguins", "champion")
    assert champion.tags["crispml.run_id"] == go.run_id
    assert [v.version for v in client.search_model_versions("name = 'penguins'")] == [champion.version]
    tags = client.get_run(nogo.run_id).data.tags
    assert tags["crispml.decision"] == "no-go" and "more than 0.9 is required" in tags["crispml.decision_reasons"]
    assert "crispml.export_dir" not in tags
    assert "**Decision: NO-GO**" in download(uri, nogo.run_id, "model_card.md").read_text()
    # The model is still logged to the no-go run, for inspection.
    mlflow.set_tracking_uri(uri)
    assert hasattr(mlflow.sklearn.load_model(nogo.model_uri), "predict_proba")


@pytest.mark.slow
def test_no_go_on_the_command_line_exits_3_and_neither_registers_nor_exports(tmp_path):
    config = tmp_path / "crispml.toml"
    config.write_text(
        '[business]\nobjective = "Sort penguins in the field"\nmin_margin_over_baseline = 0.9\nmax_model_mb = 0.000001\n'
        '[modeling]\nmodels = ["baseline", "linear"]\nfolds = 3\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [str(CRISPML), "run", "--config", str(config), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("crispml: no-go: ")
    out = json.loads(proc.stdout)  # the JSON still prints, with the decision and each reason
    assert out["decision"] == "no-go" and len(out["reasons"]) == 2
    assert any("more than 0.9 is required" in r for r in out["reasons"])
    assert any("at most 1e-06 is allowed" in r for r in out["reasons"])
    assert out["export_path"] is None and out["registered_model_uri"] == ""
    rows = {r["model"]: r for r in out["leaderboard"]}
    assert rows["linear"]["chosen"] and rows["linear"]["p_value"] == 1.0 and rows["baseline"]["p_value"] < 0.05

    assert not (tmp_path / "models").exists()  # no export
    uri = "sqlite:///" + str(tmp_path / "mlruns" / "mlflow.db")
    client = MlflowClient(uri, registry_uri=uri)
    assert client.search_registered_models() == []  # nothing registered, so no champion alias
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("penguins", "champion")
    tags = client.get_run(out["run_id"]).data.tags
    assert tags["crispml.decision"] == "no-go" and "at most 1e-06 is allowed" in tags["crispml.decision_reasons"]


@pytest.mark.slow
def test_regression_plots_card_and_criteria_logged_before_training(tmp_path, monkeypatch):
    seen = {}
    compare = modeling.compare_models

    def spy(*args, **kwargs):  # what the run holds when training starts
        run_id = mlflow.active_run().info.run_id
        client = MlflowClient(uri)
        seen["artifacts"] = {a.path for a in client.list_artifacts(run_id)}
        seen["params"] = client.get_run(run_id).data.params
        return compare(*args, **kwargs)

    monkeypatch.setattr(modeling, "compare_models", spy)
    config = config_for(
        tmp_path,
        **{
            "business.target": "body_mass_g",
            "business.min_score": 0.6,
            "business.max_latency_ms_per_row": 50.0,
            "tracking.experiment": "mass",
            "modeling.models": ["baseline", "linear", "random_forest"],
            **FAST,
        },
    )
    uri = config.tracking_uri
    result = run(config)
    assert "business.json" in seen["artifacts"] and seen["params"]["business.min_score"] == "0.6"
    business = json.loads(download(uri, result.run_id, "business.json").read_text())
    assert business["metric"] == "r2" and business["min_score"] == 0.6 and business["max_latency_ms_per_row"] == 50.0

    assert result.profile.task == "regression" and result.decision.go
    assert [c.criterion for c in result.decision.checks] == ["min_score", "min_margin_over_baseline", "max_latency_ms_per_row"]
    assert pngs(download(uri, result.run_id, "plots")) == REGRESSION_PLOTS | ALL_TASKS_PLOTS
    assert pngs(result.export_dir / "plots") == REGRESSION_PLOTS | ALL_TASKS_PLOTS
    card = (result.export_dir / "model_card.md").read_text()
    assert f"**Model:** `{result.selection.chosen}`" in card and "**Decision: GO**" in card
    assert "| min_score | r2 at least as good as 0.6 |" in card
    importance = pd.read_csv(download(uri, result.run_id, "permutation_importance.csv"))
    assert set(importance["feature"]) == set(result.profile.features)  # raw columns, not one-hot ones
    metrics = MlflowClient(uri).get_run(result.run_id).data.metrics
    assert metrics["predict_ms_per_row"] > 0 and metrics["model_mb"] > 0 and "baseline_holdout_r2" in metrics


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_trained_mlp_logs_its_loss_curve_and_binary_plots(tmp_path):
    # No baseline among the candidates: the gate still measures the margin over one.
    config = config_for(tmp_path, **{"business.target": "sex", "modeling.models": ["mlp"], **FAST})
    result = run(config)
    assert result.profile.task == "binary" and result.selection.chosen == "mlp" and result.decision.go
    margin = next(c for c in result.decision.checks if c.criterion == "min_margin_over_baseline")
    baseline = MlflowClient(config.tracking_uri).get_run(result.run_id).data.metrics["baseline_holdout_roc_auc"]
    assert baseline == pytest.approx(0.5) and margin.value == pytest.approx(result.evaluation.holdout["roc_auc"] - 0.5)
    expected = CLASSIFICATION_PLOTS | ALL_TASKS_PLOTS | {"mlp_loss_curve.png"}
    assert pngs(download(config.tracking_uri, result.run_id, "plots")) == expected
    assert pngs(result.export_dir / "plots") == expected


def test_an_impossible_min_score_for_the_detected_metric_fails_before_the_store_is_touched(tmp_path):
    # No metric is named, so only the detected task (regression: r2, at most 1) shows the problem.
    config = config_for(tmp_path, **{"business.target": "body_mass_g", "business.min_score": 300.0})
    with pytest.raises(ConfigError, match=r"business.min_score 300 is impossible for r2, whose scores are at most 1"):
        run(config)
    assert not (tmp_path / "mlruns").exists()
