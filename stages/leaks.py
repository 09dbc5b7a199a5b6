"""Possible target leaks: a feature that alone predicts the target almost perfectly.

A leak (a column written after the outcome, a copy or a code of the target) makes every
model look excellent in cross-validation and fail in use. Each labelled row is paired with
its nearest row by one feature (same category, or nearest value) and the pairs' target
disagreement is compared with random pairs'; a column far below that is flagged in the
profile, not dropped, with the numbers. Bounded: a sample of rows and one sort per column.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

LEAK_MAX_DISAGREEMENT = 0.02
"""A feature is a possible leak when rows paired by it (same category, or nearest value)
disagree on the target at most this share as often as random pairs of rows do. For a
numeric target that is 1 - R² of predicting the target from the feature alone: 0.02 is a
correlation of 0.99 for a straight line. For classes it is the share of the target's Gini
impurity the feature leaves."""
LEAK_SAMPLE_ROWS = 10_000
"""The leak check pairs at most this many labelled rows (a random sample), so it costs the
same on a million rows, and one sort per column: linear in the number of columns."""
LEAK_MIN_ROWS = 20
"""Below this many labelled rows the leak check is not run: pairs of rows that agree by chance are too likely."""
LEAK_NOTE = "possible target leak"


def leak_notes(data: pd.DataFrame, features: Mapping[str, bool], target: str, classes: bool, seed: int) -> dict[str, str]:
    """Notes for the features that alone predict the target almost perfectly, for every task: often a leak from the future.

    Args:
        data: The table, target included.
        features: The features to check, each with whether it is numeric.
        target: The target column.
        classes: Whether the target is classes (else a number).
        seed: Seed of the row sample and of the random pairs.

    Returns:
        `{feature: note}` of the possible leaks.

    Each labelled row (of a random sample of at most `LEAK_SAMPLE_ROWS`) is paired with its
    nearest neighbour by the feature alone: a row of the same category, or of the nearest
    value (a missing value pairs with another missing one); a row with no such neighbour is
    paired at random. The target's disagreement over these pairs (a class differs, or the
    squared difference), against that over random pairs of rows, is the share of the
    target's variation the feature leaves unexplained, out of sample (each row is predicted
    from another). One stable sort per feature, on rows already in random order (so that
    ties pair at random): the cost is linear in the number of features and bounded in rows.
    """
    rows = np.flatnonzero(data[target].notna().to_numpy())
    if len(rows) < LEAK_MIN_ROWS or not features:
        return {}
    rng = np.random.default_rng(seed)
    rows = rng.permutation(rows)[:LEAK_SAMPLE_ROWS]
    sample = data.iloc[rows]
    y = sample[target]
    n = len(rows)
    if classes:
        codes = pd.factorize(y.astype(str))[0]
        counts = np.bincount(codes).astype(float)
        floor = (n * n - float((counts**2).sum())) / (n * (n - 1))  # random distinct pairs that differ
    else:
        values = y.to_numpy(dtype=float)
        floor = 2 * float(values.var(ddof=1))  # mean squared difference of random distinct pairs
    if not floor > 0:
        return {}
    notes = {}
    for name, numeric in features.items():
        partner = _nearest_partner(sample[name], numeric, rng)
        if classes:
            disagreement = float(np.mean(codes != codes[partner]))
        else:
            disagreement = float(np.mean((values - values[partner]) ** 2))
        share = disagreement / floor
        if share <= LEAK_MAX_DISAGREEMENT:
            notes[name] = (
                f"{LEAK_NOTE}: alone it predicts the target almost perfectly (rows paired by it disagree on the "
                f"target {share:.1%} as often as random pairs); check it is known at prediction time"
            )
    return notes


def _nearest_partner(x: pd.Series, numeric: bool, rng: np.random.Generator) -> np.ndarray:
    """For each row, the position of another row with the same category or the nearest value (random when there is none)."""
    n = len(x)
    if numeric:
        value = x.to_numpy(dtype=float, na_value=np.nan)
        order = np.argsort(value, kind="stable")  # missing values last, where they pair among themselves
        v = value[order]
        g = np.isnan(v)
        v = np.where(g, 0.0, v)
    else:
        group = pd.factorize(x, use_na_sentinel=False)[0]
        order = np.argsort(group, kind="stable")
        g, v = group[order], np.zeros(n)
    same = g[1:] == g[:-1]
    gap = v[1:] - v[:-1]
    left = np.where(np.r_[False, same], np.r_[np.inf, gap], np.inf)
    right = np.where(np.r_[same, False], np.r_[gap, np.inf], np.inf)
    position = np.arange(n)
    chosen = np.where(left <= right, position - 1, position + 1)
    alone = ~np.r_[False, same] & ~np.r_[same, False]
    chosen[alone] = (position[alone] + rng.integers(1, n, size=int(alone.sum()))) % n
    partner = np.empty(n, dtype=np.int64)
    partner[order] = order[chosen]
    return partner
