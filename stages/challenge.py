"""Champion and challenger: is a new model practically as good as the one deployed, on rows neither learnt from?

A scheduled run retrains on fresh data. Before its model replaces the registry's
`champion`, both are scored on the new run's holdout and compared row by row: each row's
loss under the primary metric (`Metric.row_loss`), paired, in the selection rule's own
test (`selection.loss_posterior`; rows are independent, so without the folds'
correction). The new model takes `champion` only when the chance that it loses more than
the selection tolerance against the champion is at most `alpha`: the evidence must show
it is practically as good, as a simpler candidate must against the top one.

A fair comparison needs rows the champion did not learn from: it was refitted on every
labelled row of its own run, and fresh data often overlaps old data. Each registered run
therefore keeps a record (`ChampionRecord`): a fingerprint of every row its model learnt
from, and for its own holdout rows the predictions of the model that did not see them.
A new holdout row is scored by the champion itself when the champion never saw it, by
that record when it was in the champion's holdout, and left out otherwise.
"""

from __future__ import annotations

import io
import math
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stages.cleaning import MISSING_MARKERS
from stages.contract import PREDICTION, PROBA_PREFIX
from stages.metrics import METRICS, Metric
from stages.selection import SelectionSettings

FIRST = "first"
"""No champion yet: the new model becomes it."""
PROMOTED = "promoted"
"""The new model is practically as good as the champion (or better): it takes `champion`."""
CHALLENGER = "challenger"
"""The new model may be worse than the champion by more than the tolerance: it gets `challenger`, the champion stays."""
NOT_COMPARED = "not_compared"
"""The champion cannot score the new data (columns, task, files): the new model takes `champion`, with the reason."""
NOT_CHALLENGED = "not_challenged"
"""The comparison was switched off (`--no-challenge`): the new model takes `champion`."""
OUTCOMES = (FIRST, PROMOTED, CHALLENGER, NOT_COMPARED, NOT_CHALLENGED)
FINGERPRINT_SCHEME = 2
"""How `row_fingerprints` reads cells; a record made another way cannot be matched and is not used."""


@dataclass(frozen=True)
class ChampionRecord:
    """What a registered run keeps so that a later run can compare against its model fairly.

    Attributes:
        columns: The raw columns the fingerprints are taken over (features and target, sorted).
        trained: Sorted fingerprints of every row the deployed model learnt from.
        holdout: Fingerprints of the run's holdout rows, in order.
        predictions: The holdout-era model's predictions for them (it never saw them).
        proba: Its class probabilities, columns in the order of `classes`, or None.
        classes: The class labels as text, or None for regression.
    """

    columns: tuple[str, ...]
    trained: np.ndarray
    holdout: np.ndarray
    predictions: np.ndarray
    proba: np.ndarray | None
    classes: tuple[str, ...] | None

    def to_bytes(self) -> bytes:
        """The record as a compressed `.npz` file (plain arrays: it loads without pickle)."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {
            "scheme": np.array(FINGERPRINT_SCHEME),
            "columns": np.array(self.columns, dtype=str),
            "trained": self.trained,
            "holdout": self.holdout,
            "predictions": self.predictions if self.classes is None else self.predictions.astype(str),
        }
        if self.classes is not None:  # a classifier's record, with or without probabilities
            arrays["classes"] = np.array(self.classes, dtype=str)
        if self.proba is not None and self.classes is not None:
            arrays["proba"] = self.proba
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, content: bytes) -> ChampionRecord:
        """Read a record written by `to_bytes`.

        Raises:
            ValueError: The content is not such a record.
        """
        try:
            with np.load(io.BytesIO(content), allow_pickle=False) as f:
                scheme = int(f["scheme"]) if "scheme" in f else 0
                if scheme != FINGERPRINT_SCHEME:
                    raise ValueError(
                        f"its rows were fingerprinted by scheme {scheme}, this crispml's is {FINGERPRINT_SCHEME}"
                    )
                classes = tuple(str(c) for c in f["classes"]) if "classes" in f else None
                record = cls(
                    columns=tuple(str(c) for c in f["columns"]),
                    trained=np.asarray(f["trained"], dtype=np.uint64),
                    holdout=np.asarray(f["holdout"], dtype=np.uint64),
                    predictions=np.asarray(f["predictions"]),
                    proba=np.asarray(f["proba"], dtype=float) if "proba" in f else None,
                    classes=classes,
                )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a champion record ({exc})") from None
        n = len(record.holdout)
        shapes_fit = record.predictions.shape == (n,) and (
            record.proba is None or (record.classes is not None and record.proba.shape == (n, len(record.classes)))
        )
        if not shapes_fit or not record.columns:
            raise ValueError("not a champion record (its arrays do not fit together)")
        return record


def fingerprint_columns(features: Sequence[str], target: str) -> tuple[str, ...]:
    """The raw columns a run's row fingerprints are taken over: its features and its target, sorted."""
    return tuple(sorted({*features, target}, key=str))


def row_fingerprints(rows: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """A 64-bit fingerprint of each row's values in `columns`, the same for the same values in any file.

    Each cell is read as the data step reads it, whatever type its column got in this
    file: spaces stripped, a missing marker (`?`, `NA`, blank...) is missing, a text that is
    a number is that number (so `5`, `5.0` and `" 5 "` match, as do an integer column and the
    same column with a gap read as floats, or with one `?` read as text); other text as text.

    Args:
        rows: Rows as read (raw, uncleaned).
        columns: The columns to take; all must be present.

    Returns:
        One `uint64` per row, in order.
    """
    parts = {}
    for i, name in enumerate(columns):
        number, text = _cells(rows[name])
        parts[f"n{i}"], parts[f"t{i}"] = number, text
    frame = pd.DataFrame(parts, index=pd.RangeIndex(len(rows)))
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def _cells(col: pd.Series) -> tuple[np.ndarray, pd.Categorical]:
    """A column's cells as (number or NaN, text or ""): a number's text is empty, a missing cell is (NaN, "").

    The text is a `Categorical` (its hashes are its values'), built from each distinct value once.
    """
    n = len(col)
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64"), pd.Categorical.from_codes(np.zeros(n, dtype=int), [""])
    if pd.api.types.is_datetime64_any_dtype(col):  # as a CSV writes it: the date alone when every time is midnight
        times = col.dt.tz_localize(None) if getattr(col.dt, "tz", None) is not None else col
        midnight = bool((times.dropna() == times.dropna().dt.normalize()).all())
        col = times.dt.strftime("%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S")
    # As text first: factorize takes True and 1 for one value, and a bool column with a gap is text anyway.
    # (A missing cell becomes "nan" or "None", both missing markers.)
    codes, uniques = pd.factorize(col.astype(str), use_na_sentinel=True)  # each distinct value read once
    text = pd.Series(uniques, dtype=object).astype(str).str.strip()
    missing = text.str.lower().isin(MISSING_MARKERS).to_numpy()
    number = np.where(missing, np.nan, pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64"))
    words = np.where(missing | ~np.isnan(number), "", text.to_numpy(dtype=object))
    word_codes, distinct = pd.factorize(pd.Series(words, dtype=object))
    categories = list(distinct)
    if "" not in categories:
        categories.append("")
    empty = categories.index("")
    absent = codes < 0  # missing in the column itself
    at = np.where(absent, 0, codes)
    numbers = np.where(absent, np.nan, number[at] if len(number) else np.nan)
    text_codes = np.where(absent, empty, word_codes[at] if len(word_codes) else empty)
    return numbers, pd.Categorical.from_codes(text_codes, categories)


def champion_record(
    columns: Sequence[str],
    trained: np.ndarray,
    holdout_rows: pd.DataFrame,
    predictions: np.ndarray,
    proba: np.ndarray | None,
    classes: np.ndarray | None,
) -> ChampionRecord:
    """The record a registered run keeps (see the module's docstring).

    Args:
        columns: `fingerprint_columns` of the run.
        trained: Fingerprints of the raw rows the deployed model learnt from (every labelled row).
        holdout_rows: The raw holdout rows, in the order of `predictions`.
        predictions: The holdout-era model's predictions.
        proba: Its class probabilities, or None.
        classes: Its classes, or None for regression.

    Returns:
        The record.
    """
    return ChampionRecord(
        columns=tuple(columns),
        trained=np.unique(np.asarray(trained, dtype=np.uint64)),
        holdout=row_fingerprints(holdout_rows, columns),
        predictions=np.asarray(predictions) if classes is None else label_text(predictions).astype(str),
        proba=None if proba is None or classes is None else np.asarray(proba, dtype=float),
        classes=None if classes is None else tuple(label_text(classes).tolist()),
    )


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on rows: labels or values, and class probabilities (columns follow `classes`)."""

    values: np.ndarray
    proba: np.ndarray | None = None
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sources:
    """Where the champion's prediction of each new holdout row comes from.

    Attributes:
        live: Rows the champion never learnt from: it scores them itself.
        recorded: Rows of the champion's own holdout, and where each is in its record.
        left_out: Rows it learnt from and has no unbiased prediction of.
    """

    live: np.ndarray
    recorded: np.ndarray
    record_index: np.ndarray
    left_out: int


def fair_rows(record: ChampionRecord, holdout: np.ndarray) -> Sources:
    """Sort the new holdout's rows by where the champion's fair prediction of each comes from.

    Args:
        record: The champion's record.
        holdout: Fingerprints of the new holdout's rows over the record's columns.

    Returns:
        Positions in the new holdout: scored live, taken from the record, and how many are left out.
    """
    everything = np.arange(len(holdout))
    first: dict[int, int] = {}
    for i, key in enumerate(record.holdout.tolist()):
        first.setdefault(key, i)
    in_record = np.array([first.get(k, -1) for k in holdout.tolist()], dtype=int)
    recorded = everything[in_record >= 0]
    seen = np.isin(holdout, record.trained)
    live = everything[(in_record < 0) & ~seen]
    return Sources(live, recorded, in_record[recorded], int(len(holdout) - len(live) - len(recorded)))


def scored_predictions(scored: pd.DataFrame, classes: np.ndarray | None) -> Predictions:
    """A scored frame's `prediction` and `proba_<class>` columns (`contract.score`) as predictions."""
    if classes is None:
        return Predictions(scored[PREDICTION].to_numpy())
    names = [f"{PROBA_PREFIX}{c}" for c in classes]
    proba = scored[names].to_numpy(dtype=float) if all(n in scored.columns for n in names) else None
    return Predictions(scored[PREDICTION].to_numpy(), proba, tuple(label_text(classes).tolist()))


def combined(parts: Sequence[Predictions], n: int) -> Predictions:
    """Predictions of several sources one after the other, probabilities aligned to the first's classes."""
    if not parts:
        return Predictions(np.array([]))
    classes = parts[0].classes
    values, probas = [], []
    for part in parts:
        v, proba = _aligned(part, classes)
        values.append(v)
        probas.append(proba)
    proba = None if any(p is None for p in probas) else np.vstack(probas)
    out = Predictions(np.concatenate(values), proba, classes)
    if len(out.values) != n:
        raise ValueError(f"{len(out.values)} predictions for {n} rows")
    return out


def recorded_predictions(record: ChampionRecord, index: np.ndarray) -> Predictions:
    """The record's predictions at the given positions."""
    return Predictions(
        values=record.predictions[index],
        proba=None if record.proba is None else record.proba[index],
        classes=record.classes,
    )


@dataclass(frozen=True)
class Challenge:
    """The new model against the champion, and what happens to the aliases.

    Attributes:
        outcome: One of `OUTCOMES`.
        promoted: The new model takes `champion` (else it gets `challenger`).
        reason: One sentence: why.
        champion_version: The champion's registry version ("" without one).
        rows: Rows compared (holdout rows neither model learnt from).
        rows_left_out: Holdout rows the champion learnt from, left out.
        metric: The primary metric.
        champion_score: The champion's score on the compared rows (NaN when not compared).
        new_score: The new model's score on the same rows.
        expected_loss: The new model's mean row-loss excess over the champion's, in the row
            losses' units (positive: worse): the metric's own for accuracy, balanced accuracy,
            r2, mae, log loss and ROC AUC; squared error for rmse; the class-balanced error for f1_macro.
        tolerance: The selection tolerance, in the metric's units.
        loss_tolerance: The same in the row losses' units (for rmse, `(score + t)^2 - score^2`).
        p_worse: The chance that the new model loses more than the tolerance.
        alpha: The largest accepted `p_worse`.
    """

    outcome: str
    promoted: bool
    reason: str
    champion_version: str = ""
    rows: int = 0
    rows_left_out: int = 0
    metric: str = ""
    champion_score: float = math.nan
    new_score: float = math.nan
    expected_loss: float = math.nan
    tolerance: float = math.nan
    loss_tolerance: float = math.nan
    p_worse: float = math.nan
    alpha: float = math.nan

    @property
    def alias(self) -> str:
        """The alias the new version gets: `champion` or `challenger`."""
        return "champion" if self.promoted else CHALLENGER

    def to_dict(self) -> dict[str, Any]:
        """The challenge as JSON-friendly values (NaN as None)."""
        out: dict[str, Any] = {"alias": self.alias}
        for key, value in self.__dict__.items():
            out[key] = None if isinstance(value, float) and math.isnan(value) else value
        return out


def unchallenged(outcome: str, reason: str, champion_version: str = "") -> Challenge:
    """A challenge decided without a comparison: no champion, switched off, or a champion that cannot score the data."""
    return Challenge(outcome=outcome, promoted=True, reason=reason, champion_version=champion_version)


def label_text(values: Any) -> np.ndarray:
    """Class labels as one canonical text, whichever type a run gave them: `1`, `1.0` and `np.int64(1)` are "1".

    Args:
        values: Labels (an array, a list or a tuple).

    Returns:
        An object array of text.
    """

    def text(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
            return str(int(v))
        if isinstance(v, np.generic):
            return str(v.item())
        return str(v)

    return np.array([text(v) for v in np.asarray(values, dtype=object).tolist()], dtype=object)


def _aligned(p: Predictions, classes: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels as text and probabilities with columns in the order of `classes` (a class the model lacks: 0)."""
    if classes is None:
        return np.asarray(p.values, dtype=float), None
    labels = label_text(p.values)
    if p.proba is None or p.classes is None:
        return labels, None
    proba = np.zeros((len(labels), len(classes)))
    where = {c: i for i, c in enumerate(label_text(p.classes).tolist())}
    for j, c in enumerate(classes):
        if c in where:
            proba[:, j] = p.proba[:, where[c]]
    # A class the other model knows and this run does not is dropped: the rest share its probability.
    total = proba.sum(axis=1, keepdims=True)
    return labels, np.divide(proba, total, out=np.full_like(proba, 1.0 / len(classes)), where=total > 0)


def compare(
    metric: str,
    y_true: np.ndarray,
    new: Predictions,
    champion: Predictions,
    settings: SelectionSettings,
    *,
    champion_version: str,
    rows_left_out: int = 0,
) -> Challenge:
    """Compare the new model with the champion on the same rows: the selection rule's test on per-row losses.

    Args:
        metric: The primary metric.
        y_true: The rows' targets.
        new: The new model's predictions on them.
        champion: The champion's, on the same rows in the same order.
        settings: The selection rule's alpha (the largest accepted chance that the new model loses
            more than the tolerance) and tolerances (the `[evaluation]` section).
        champion_version: The champion's registry version.
        rows_left_out: Holdout rows left out of the comparison (the champion learnt from them).

    Returns:
        The challenge: promoted when `p_worse <= alpha`.
    """
    m, alpha = METRICS[metric], settings.alpha
    classes = None if new.classes is None else tuple(label_text(new.classes).tolist())
    truth = label_text(y_true) if classes is not None else np.asarray(y_true, dtype=float)
    labels = np.array(classes, dtype=object) if classes is not None else None
    new_values, new_proba = _aligned(new, classes)
    champ_values, champ_proba = _aligned(champion, classes)
    base = dict(champion_version=champion_version, rows=len(truth), rows_left_out=rows_left_out, metric=metric, alpha=alpha)
    if len(truth) < 2:
        return Challenge(
            CHALLENGER, False,
            f"only {len(truth)} holdout row(s) are new to the champion ({rows_left_out} it learnt from are left out), "
            "too few to show the new model is as good; it stays champion", **base,
        )
    if m.needs_proba and champ_proba is None:  # it cannot be judged by this metric at all: not a reason to keep it
        return Challenge(
            NOT_COMPARED, True,
            f"champion version {champion_version} gives no class probabilities, which {metric} needs: "
            "the new model takes its place uncompared", **base,
        )
    if m.row_loss is None:
        raise ValueError(f"metric {metric} has no row_loss in the registry; add one to compare models row by row")
    champ_score, champ_loss, weights = _scored(m, truth, champ_values, champ_proba, labels)
    new_score, new_loss, _ = _scored(m, truth, new_values, new_proba, labels)
    if not (math.isfinite(champ_score) and math.isfinite(new_score)) or not np.isfinite(champ_loss - new_loss).all():
        return Challenge(
            CHALLENGER, False,
            f"the {len(truth)} holdout rows new to the champion cannot be scored by {metric} "
            f"(too few classes among them, say): nothing shows the new model is as good; it stays champion", **base,
        )
    absolute, _ = m.tolerance(champ_score, settings.tolerance, settings.relative_tolerance)
    loss_tol = m.loss_tolerance(absolute, champ_score)
    expected, scale = paired_difference(new_loss - champ_loss, weights, m.se_factor)
    p_worse = _p_above(expected, scale, len(truth) - 1, loss_tol)
    promoted = p_worse <= alpha
    verdict = (
        f"the new model is practically as good as champion version {champion_version}" if promoted
        else f"the new model may be worse than champion version {champion_version}"
    )
    reason = (
        f"{verdict}: {metric} {new_score:.4f} against {champ_score:.4f} on {len(truth)} holdout rows neither learnt from; "
        f"chance of losing more than the tolerance {absolute:.4g}: {p_worse:.3f} "
        f"({'at most' if promoted else 'more than'} alpha {alpha:g})"
    )
    return Challenge(
        PROMOTED if promoted else CHALLENGER, promoted, reason,
        champion_score=champ_score, new_score=new_score, expected_loss=expected,
        tolerance=absolute, loss_tolerance=loss_tol, p_worse=p_worse, **base,
    )


def _scored(m: Metric, truth: np.ndarray, values: np.ndarray, proba: np.ndarray | None, labels: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """A model's score on the rows, its per-row losses and their weights; a NaN score when the metric is undefined there."""
    with warnings.catch_warnings():  # an undefined score is reported by the caller, in words
        warnings.simplefilter("ignore")
        try:
            loss, weights = m.row_loss(truth, values, proba, labels)  # type: ignore[misc]
            return m.score(truth, values, proba, labels), loss, weights
        except ValueError:  # e.g. ROC AUC of rows that hold one class only
            return math.nan, np.full(len(truth), math.nan), np.ones(len(truth))


def paired_difference(d: np.ndarray, weights: np.ndarray, se_factor: float = 1.0) -> tuple[float, float]:
    """The weighted mean of per-row loss differences and its standard error.

    The rows are independent draws, so the mean's variance is `sum(w_i^2 (d_i - mean)^2) /
    sum(w)^2` (with n / (n - 1)): for class-balanced weights, each class's variance over
    its own count, as a stratified mean has. `se_factor` scales it for metrics whose row
    losses are not independent (ROC AUC: DeLong's variance is four times this one's).

    Args:
        d: Per-row differences, the new model's loss minus the champion's.
        weights: The metric's row weights.
        se_factor: See above.

    Returns:
        The mean difference (positive: the new model is worse) and its standard error.
    """
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    mean = float(np.dot(w, d))
    n = len(d)
    variance = float(np.dot(w**2, (d - mean) ** 2)) * n / (n - 1)
    return mean, se_factor * math.sqrt(max(variance, 0.0))


def _p_above(mean: float, scale: float, df: int, tolerance: float) -> float:
    """The posterior chance that the mean difference exceeds the tolerance (Student t, flat prior).

    With no spread the difference is known: 1 above the tolerance (float noise aside), else 0.
    """
    if scale <= 1e-12 * max(1.0, abs(mean)):
        return 1.0 if mean > tolerance + 1e-12 * max(1.0, abs(tolerance)) else 0.0
    return float(stats.t.sf(tolerance, df, loc=mean, scale=scale))
