"""Small inline frames that the tests of several stages share: `from frames import regression_data, wide_frame`."""

import numpy as np
import pandas as pd


def wide_frame(n_rows: int, n_columns: int, task: str) -> tuple:
    """Noise columns, a categorical one, and a target that depends on x3 (numeric) and `group` only."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n_rows, n_columns)), columns=[f"x{i}" for i in range(n_columns)])
    X["group"] = rng.choice(["a", "b", "c"], size=n_rows)
    signal = 2.0 * X["x3"] + X["group"].map({"a": -2.0, "b": 0.0, "c": 2.0})
    if task == "regression":
        return X, signal + rng.normal(scale=0.1, size=n_rows), None
    y = pd.Series(np.where(signal > 0, "yes", "no"))
    return X, y, np.array(["no", "yes"])


def regression_data() -> tuple[pd.DataFrame, pd.Series]:
    """100 rows of two numeric features and a numeric target `y`."""
    rng = np.random.default_rng(0)
    # A trend across rows makes every fold's mean differ from the overall mean.
    X = pd.DataFrame({"a": np.linspace(0, 10, 100) + rng.normal(size=100), "b": rng.normal(size=100)})
    y = pd.Series(2 * X["a"] + rng.normal(size=100), name="y")
    return X, y
