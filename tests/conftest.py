"""Shared fixtures: small inline frames, and one real pipeline run reused by many tests."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import apply_overrides
from pipeline.runner import RunResult, run
from pipeline.settings import DEFAULT_DATA, Config, PreparationConfig
from stages.contract import build_contract
from stages.model_registry import ModelSettings, build_candidates
from stages.preparation import build_preprocessor, features_and_target
from stages.understanding import profile_data

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def benchmark_script():
    """`benchmarks/run_benchmark.py` as a module (it is a script, not a package): its data sets and helpers."""
    spec = importlib.util.spec_from_file_location("run_benchmark", REPO / "benchmarks" / "run_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_benchmark"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _burn(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


@pytest.fixture
def both_cores_busy():
    """Two processes that keep both cores busy while the test runs (the machine CI may be on).

    For tests of time limits: a limit that passes only on an idle machine is a defect.
    They stop after 120 s at the latest, or when the test ends.
    """
    stop_at = time.monotonic() + 120
    hogs = [multiprocessing.get_context("spawn").Process(target=_burn, args=(stop_at,), daemon=True) for _ in range(2)]
    for hog in hogs:
        hog.start()
    yield
    for hog in hogs:
        hog.kill()
        hog.join()


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their store explicitly; a developer's MLFLOW_TRACKING_URI must not leak in."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def sqlite_uri(folder: Path) -> str:
    """A SQLite tracking URI for a store in `folder`."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def config_for(tmp: Path, data: Path = DEFAULT_DATA, **overrides: object) -> Config:
    """A config whose store and exports live under `tmp`, with dotted-field overrides."""
    base = {
        "data.path": str(data),
        "tracking.uri": sqlite_uri(tmp / "mlruns"),
        "deployment.out": str(tmp / "models"),
        "modeling.n_jobs": 2,
    }
    return apply_overrides(Config(), {**base, **overrides})


@dataclass(frozen=True)
class Trained:
    """A finished pipeline run and where it wrote."""

    result: RunResult
    config: Config
    tmp: Path

    @property
    def tracking_uri(self) -> str:
        return self.config.tracking_uri


@pytest.fixture(scope="session")
def penguins_run(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The default pipeline (penguins, multiclass, all seven candidates), run once per session."""
    tmp = tmp_path_factory.mktemp("penguins")
    config = config_for(tmp)
    return Trained(result=run(config), config=config, tmp=tmp)


@pytest.fixture
def mixed_frame() -> pd.DataFrame:
    """60 rows: numeric, categorical (with a rare value), missing cells, an ID, a constant."""
    rng = np.random.default_rng(0)
    n = 60
    x1 = rng.normal(size=n)
    colour = np.where(x1 > 0, "red", "blue").astype(object)
    colour[0] = "green"
    frame = pd.DataFrame(
        {
            "row_id": np.arange(1000, 1000 + n),
            "x1": x1,
            "x2": rng.uniform(0, 10, size=n),
            "colour": colour,
            "constant": 7,
            "label": np.where(x1 + rng.normal(scale=0.3, size=n) > 0, "yes", "no"),
        }
    )
    frame.loc[[3, 9], "x2"] = np.nan
    frame.loc[5, "colour"] = np.nan
    return frame


def replace(config: Config, **sections: dict) -> Config:
    """`config` with some fields of some sections replaced: `replace(c, modeling={"folds": 3})`."""
    return dataclasses.replace(
        config, **{name: dataclasses.replace(getattr(config, name), **fields) for name, fields in sections.items()}
    )


def raw_messy(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A file as it comes: '?' markers, thousands separators, a date, padded labels."""
    rng = np.random.default_rng(seed)
    income = rng.integers(500, 90_000, size=n)
    month = rng.integers(1, 13, size=n)
    colour = rng.choice(["red", "blue"], size=n)
    signal = (income - 45_000) / 30_000 + (colour == "red") + rng.normal(scale=0.5, size=n)
    return pd.DataFrame(
        {
            "age": [("?" if i % 10 == 0 else str(20 + i % 60)) for i in range(n)],
            "income": [f"{v:,}" for v in income],
            "visit": [f"2021-{m:02d}-{1 + i % 28:02d}" for i, m in enumerate(month)],
            "colour": [c + (" " if i % 3 == 0 else "") for i, c in enumerate(colour)],
            "y": [("yes" if s > 0.5 else "no") + (" " if i % 4 == 0 else "") for i, s in enumerate(signal)],
        }
    )


@pytest.fixture
def trained_on_raw():
    """A linear model trained through the data step on `raw_messy`: (raw, model, X, contract, profile)."""
    from stages.cleaning import clean_data

    raw = raw_messy()
    cleaned = clean_data(raw, "y")
    profile = profile_data(cleaned.frame, "y", cleaning=cleaned.report)
    X, y = features_and_target(cleaned.frame, profile)
    model = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0))["linear"]
    return raw, model.fit(X, y), X, build_contract(X, profile), profile
