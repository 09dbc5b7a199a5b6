"""The configuration's dataclasses on their own (`pipeline.settings`): every default, the derived names, plain values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.config import apply_overrides, load_config
from pipeline.settings import (
    DEFAULT_DATA,
    DEFAULT_TRACKING_URI,
    Config,
    DataConfig,
    ModelingConfig,
    TrackingConfig,
)
from stages.model_registry import MODELS


def test_defaults_without_a_file():
    config = load_config(None)
    assert config == Config()
    assert config.modeling.folds == 5 and config.preparation.holdout == 0.2
    assert config.experiment == "penguins"
    assert config.tracking_uri == "sqlite:///mlruns/mlflow.db"


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert Config().tracking_uri == "sqlite:///elsewhere.db"
    assert apply_overrides(Config(), {"tracking.uri": "http://h:5000"}).tracking_uri == "http://h:5000"


def test_the_default_data_is_the_bundled_penguins_file_and_every_model_is_a_candidate():
    assert DEFAULT_DATA.is_file() and DEFAULT_DATA.name == "penguins.csv"
    assert ModelingConfig().models == tuple(MODELS) and "baseline" in ModelingConfig().models
    assert DEFAULT_TRACKING_URI == "sqlite:///mlruns/mlflow.db"


def test_the_experiment_is_the_configured_name_else_the_data_files_stem():
    from_file = Config(data=DataConfig(path=Path("exports/churn_2024.parquet")))
    assert from_file.experiment == "churn_2024"
    assert dataclasses.replace(from_file, tracking=TrackingConfig(experiment="churn")).experiment == "churn"


def test_to_dict_is_plain_json_with_one_table_per_section():
    plain = Config().to_dict()
    assert list(plain) == ["seed", "data", "business", "preparation", "modeling", "evaluation", "deployment", "tracking"]
    assert plain["data"]["path"] == str(DEFAULT_DATA) and plain["deployment"]["out"] == "models"  # paths as text
    assert plain["modeling"]["models"] == list(MODELS) and plain["modeling"]["mlp_hidden_layers"] == [64, 32]  # tuples as lists
    assert plain["business"]["min_score"] is None and plain["seed"] == 42
    assert json.loads(json.dumps(plain)) == plain


def test_the_sections_are_frozen():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.modeling.folds = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
