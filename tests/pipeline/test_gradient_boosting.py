"""Gradient boosting, the seventh candidate: saved with skops for every task, and end to end through predict and serve."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import skops.io as sio
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor

from pipeline.exports import MANIFEST
from pipeline.runner import run
from pipeline.settings import DEFAULT_DATA, PreparationConfig
from pipeline.tracking import loading
from stages.model_registry import (
    GRADIENT_BOOSTING_EARLY_STOPPING_MIN_ROWS,
    MLP_EARLY_STOPPING_MIN_ROWS,
    ModelSettings,
    build_candidates,
    trusted_types,
)
from stages.preparation import build_preprocessor, features_and_target
from stages.subsample import unwrap
from stages.understanding import profile_data

from conftest import config_for
from servers_util import CRISPML, HOST, clean_env, free_port, running

TASKS = ("regression", "binary", "multiclass")


def _frame(task: str, n: int = 1200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["p", "q", "r"], size=n)})
    signal = frame["a"] + 0.5 * frame["b"] + (frame["c"] == "p")
    if task == "regression":
        frame["y"] = 3000 + 500 * signal + rng.normal(scale=50, size=n)
    elif task == "binary":
        frame["y"] = np.where(signal > 0.3, "yes", "no")
    else:
        frame["y"] = pd.cut(signal, 3, labels=["lo", "mid", "hi"]).astype(str)
    return frame


def _fitted(name: str, task: str, n_rows: int):
    frame = _frame(task)
    profile = profile_data(frame, "y")
    X, y = features_and_target(frame, profile)
    pipeline = build_candidates([name], build_preprocessor(profile, PreparationConfig()), ModelSettings(task, 0, n_rows=n_rows))[name]
    return unwrap(pipeline.fit(X, y)), X


@pytest.mark.parametrize("n_rows", [1000, GRADIENT_BOOSTING_EARLY_STOPPING_MIN_ROWS + 1])
@pytest.mark.parametrize("task", TASKS)
def test_a_fitted_gradient_boosting_pipeline_round_trips_through_skops_with_the_trusted_types(task, n_rows):
    model, X = _fitted("gradient_boosting", task, n_rows)
    assert type(model.steps[-1][1]) is (HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier)
    blob = sio.dumps(model)
    assert set(sio.get_untrusted_types(data=blob)) <= set(trusted_types())
    loaded = sio.loads(blob, trusted=trusted_types())
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    if task != "regression":
        np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))
    # Without the reviewed list, skops refuses the trees: the entry is what makes it load.
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="TreePredictor"):
        sio.loads(blob)


@pytest.mark.parametrize("task", TASKS)
def test_the_exported_mlp_holds_only_plain_scikit_learn_estimators(task):
    model, X = _fitted("mlp", task, MLP_EARLY_STOPPING_MIN_ROWS)
    final = model.steps[-1][1]
    if task == "regression":
        assert type(final) is TransformedTargetRegressor and type(final.regressor_) is MLPRegressor
    else:
        assert type(final) is MLPClassifier  # the early stopping wrapper is gone
    assert all(type(step).__module__.startswith("sklearn.") for _, step in model.steps)
    loaded = sio.loads(sio.dumps(model), trusted=trusted_types())
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.slow
def test_gradient_boosting_end_to_end_through_export_predict_and_serve(tmp_path: Path):
    config = config_for(tmp_path, **{"modeling.models": ["baseline", "gradient_boosting"], "modeling.folds": 3})
    result = run(config)
    rows = {r.name: r for r in result.leaderboard.rows}
    assert rows["gradient_boosting"].status == "ok" and rows["gradient_boosting"].strategy == "100 boosting iterations"
    assert result.selection.chosen == "gradient_boosting" and result.decision.go, result.decision
    assert result.export_dir is not None
    manifest = json.loads((result.export_dir / MANIFEST).read_text())
    assert manifest["model"] == "gradient_boosting" and manifest["estimator"] == "HistGradientBoostingClassifier"
    loaded = loading.load_model(str(result.export_dir), config.tracking_uri)
    assert type(loaded.model.steps[-1][1]) is HistGradientBoostingClassifier

    scored = tmp_path / "scored.csv"
    done = subprocess.run(
        [CRISPML, "predict", "--model", result.export_dir, "--data", DEFAULT_DATA, "--out", scored],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    batch = pd.read_csv(scored)
    assert {"prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"} <= set(batch.columns)
    data = pd.read_csv(DEFAULT_DATA)
    assert (batch["prediction"] == data["species"]).mean() > 0.95  # it learnt the species (mostly seen rows)

    port = free_port()
    command = [CRISPML, "serve", "--model", result.export_dir, "--port", str(port)]
    with running(command, tmp_path / "logs", "serve", cwd=tmp_path, env=clean_env()) as server:
        url = server.first_line()
        assert url == f"http://{HOST}:{port}/invocations"
        server.wait_http(url.replace("/invocations", "/ping"))
        response = requests.post(url, data=data.to_csv(index=False).encode(), headers={"Content-Type": "text/csv"}, timeout=60)
    assert response.status_code == 200, response.text
    assert [p["prediction"] for p in response.json()["predictions"]] == batch["prediction"].tolist()
