"""Possible target leaks: a feature that alone predicts the target almost perfectly is flagged for a person, not dropped."""

import numpy as np
import pandas as pd

from stages.leaks import LEAK_MIN_ROWS, LEAK_NOTE, leak_notes
from stages.understanding import profile_data


def test_a_feature_that_determines_the_target_is_flagged_as_a_leak(mixed_frame):
    frame = mixed_frame.assign(outcome_code=mixed_frame["label"].map({"yes": "Y", "no": "N"}))
    profile = profile_data(frame, "label")
    assert any("outcome_code" in w and "leak" in w for w in profile.warnings)
    assert "outcome_code" not in profile.dropped  # flagged for a person, not silently dropped


def _leak_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    severity = rng.integers(1, 6, size=n)
    return pd.DataFrame({"severity": severity, "age": rng.normal(50, 10, size=n), "y": np.where(severity == 5, "dead", "alive")})


def test_a_numeric_code_that_determines_a_class_is_flagged_as_a_leak():
    profile = profile_data(_leak_frame(), "y")
    assert list(profile.leaks) == ["severity"]
    assert any(w.startswith("column 'severity': possible target leak") for w in profile.warnings)
    assert "severity" in profile.numeric_features  # flagged for a person, kept


def test_a_strong_but_imperfect_feature_is_not_a_leak():
    frame = _leak_frame()
    flip = np.random.default_rng(3).random(len(frame)) < 0.05  # 5% of the labels disagree with the code
    frame["y"] = np.where(flip, np.where(frame["y"] == "dead", "alive", "dead"), frame["y"])
    assert profile_data(frame, "y").leaks == {}


def test_a_category_that_determines_a_numeric_target_is_flagged_as_a_leak():
    rng = np.random.default_rng(0)
    ward = rng.choice(list("abcdef"), size=400)
    cost = pd.Series(ward).map(dict(zip("abcdef", [1.0, 5.0, 9.0, 13.0, 20.0, 40.0]))) + rng.normal(scale=0.1, size=400)
    frame = pd.DataFrame({"ward": ward, "noise": rng.normal(size=400), "cost": cost})
    assert list(profile_data(frame, "cost").leaks) == ["ward"]
    noisy = frame.assign(cost=cost + rng.normal(scale=3.0, size=400))  # ward now explains about 95% of the variance
    assert profile_data(noisy, "cost").leaks == {}


def test_a_numeric_feature_that_determines_a_numeric_target_is_flagged_on_small_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    frame = pd.DataFrame({"x": x, "z": rng.normal(size=60), "y": 3 * x + rng.normal(scale=0.05, size=60)})
    assert list(profile_data(frame, "y").leaks) == ["x"]


def test_a_missing_value_that_marks_the_class_is_a_leak():
    rng = np.random.default_rng(0)
    died = rng.random(200) < 0.3
    frame = pd.DataFrame({"days_to_death": np.where(died, rng.integers(1, 90, 200), np.nan), "y": np.where(died, "dead", "alive")})
    frame["age"] = rng.normal(size=200)
    assert "days_to_death" in profile_data(frame, "y").leaks


def test_the_check_counts_labelled_rows_and_needs_enough_of_them():
    rng = np.random.default_rng(0)
    y = pd.Series(rng.choice(["a", "b"], size=100))
    frame = pd.DataFrame({"copy": y.map({"a": "A", "b": "B"}), "y": y})
    frame.loc[LEAK_MIN_ROWS - 1 :, "y"] = None  # 100 rows, 19 of them labelled: a perfect copy is not checked
    assert leak_notes(frame, {"copy": False}, "y", classes=True, seed=0) == {}
    frame.loc[LEAK_MIN_ROWS - 1, "y"] = frame.loc[LEAK_MIN_ROWS - 1, "copy"].lower()  # one more labelled row: 20
    assert list(leak_notes(frame, {"copy": False}, "y", classes=True, seed=0)) == ["copy"]


def test_a_constant_target_has_nothing_to_leak():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=50), "code": rng.choice(["p", "q"], size=50), "y": "a", "v": 3.0})
    assert leak_notes(frame, {"x": True, "code": False}, "y", classes=True, seed=0) == {}
    assert leak_notes(frame, {"x": True, "code": False}, "v", classes=False, seed=0) == {}


def test_only_the_feature_that_determines_a_numeric_target_is_flagged_and_its_note_says_how_much():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    frame = pd.DataFrame({"x": x, "noise": rng.normal(size=200), "y": 5 * x})
    notes = leak_notes(frame, {"x": True, "noise": True}, "y", classes=False, seed=0)
    assert list(notes) == ["x"]
    assert notes["x"].startswith(f"{LEAK_NOTE}: alone it predicts the target almost perfectly")
    assert "disagree on the target 0.0% as often as random pairs" in notes["x"]
