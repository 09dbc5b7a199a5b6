"""Adding a candidate model is one registry entry: a model defined here runs end to end, touching no other module."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from pipeline import cli
from pipeline.settings import DEFAULT_DATA
from stages.model_registry import MODELS, ModelSpec


class NearestMean(ClassifierMixin, BaseEstimator):
    """Predicts the class whose mean (of the prepared columns) is nearest: a tiny, readable classifier."""

    def __init__(self, sharpness: float = 1.0) -> None:
        self.sharpness = sharpness

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y)
        self.classes_ = np.unique(y)
        self.means_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict_proba(self, X):
        distance = ((np.asarray(X, dtype=float)[:, None, :] - self.means_[None]) ** 2).sum(axis=2)
        weight = np.exp(-self.sharpness * (distance - distance.min(axis=1, keepdims=True)))
        return weight / weight.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class TrainingMean(RegressorMixin, BaseEstimator):
    """The regression side of the entry: predicts the training mean (it only has to exist and be exportable)."""

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


ENTRY = ModelSpec(
    regression=lambda s: TrainingMean(),
    classification=lambda s: NearestMean(),
    complexity=1,
    space={"sharpness": [0.5, 1.0, 2.0]},
    trusted_types=(f"{__name__}.NearestMean", f"{__name__}.TrainingMean"),
)


@pytest.mark.slow
def test_a_model_added_by_one_registry_entry_is_compared_chosen_exported_and_predicts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(MODELS, "nearest_mean", ENTRY)
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    code = cli.main([
        "run", "--data", str(DEFAULT_DATA), "--target", "species", "--models", "baseline,nearest_mean", "--out", str(tmp_path / "models"),
        "--tracking-uri", store, "--folds", "3", "--json",
    ])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["chosen_model"] == "nearest_mean"
    assert {r["model"]: r["status"] for r in summary["leaderboard"]} == {"nearest_mean": "ok", "baseline": "ok"}
    export = tmp_path / "models" / "penguins" / "model"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["model"] == "nearest_mean" and manifest["estimator"] == "NearestMean"
    # Predict from the exported folder, as a scheduler would: skops loads the test's class as a trusted type.
    out = tmp_path / "scored.csv"
    code = cli.main(["predict", "--model", str(export), "--data", str(DEFAULT_DATA), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    scored, data = pd.read_csv(out), pd.read_csv(DEFAULT_DATA)
    assert len(scored) == len(data)
    labelled = data["species"].notna()
    assert (scored.loc[labelled, "prediction"] == data.loc[labelled, "species"]).mean() > 0.9
