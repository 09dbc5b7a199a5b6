"""Fixtures the stage tests share."""

import numpy as np
import pandas as pd
import pytest

from stages.deployment import build_contract
from stages.modeling import ModelSettings, build_candidates
from stages.preparation import build_preprocessor, features_and_target
from stages.understanding import profile_data


def _raw_messy(n: int = 120, seed: int = 0) -> pd.DataFrame:
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
    from stages.cleaning import clean_data

    raw = _raw_messy()
    cleaned = clean_data(raw, "y")
    profile = profile_data(cleaned.frame, "y", cleaning=cleaned.report)
    X, y = features_and_target(cleaned.frame, profile)
    model = build_candidates(["linear"], build_preprocessor(profile, 0.01, 20), ModelSettings("binary", 0))["linear"]
    return raw, model.fit(X, y), X, build_contract(X, profile), profile
