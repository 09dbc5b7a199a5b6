"""CRISP-DM phase 6, deployment: the final model, its manifest, and batch scoring.

The chosen pipeline is refitted on every labelled row. Saving it (MLflow model format,
registry) is the runner's job through `pipeline.tracking`; this module stays pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from pipeline.errors import DataError
from stages.evaluation import Evaluation
from stages.modeling import Leaderboard, predict_with_proba
from stages.preparation import conform_features
from stages.understanding import CLASSIFICATION, DataProfile

PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "joblib", "mlflow", "skops")
"""The packages a saved model depends on, pinned in its requirements and manifest."""
INPUT_EXAMPLE_ROWS = 5
PREDICTION = "prediction"
PROBA_PREFIX = "proba_"


@dataclass(frozen=True)
class Deployment:
    """The model to ship.

    Attributes:
        name: The chosen candidate's short name.
        model: Its pipeline, fitted on every labelled row.
        features: Feature columns in training order.
        numeric: The numeric ones among them.
        input_example: A few training rows, as the model expects them.
        manifest: Provenance: data hash, seed, versions, scores, leaderboard.
    """

    name: str
    model: Pipeline
    features: tuple[str, ...]
    numeric: tuple[str, ...]
    input_example: pd.DataFrame
    manifest: dict[str, Any]


def refit_for_deployment(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    profile: DataProfile,
    leaderboard: Leaderboard,
    evaluation: Evaluation,
    data_sha256: str,
    seed: int,
) -> Deployment:
    """Fit the chosen pipeline on every labelled row and describe it.

    Args:
        pipeline: The chosen candidate's unfitted pipeline.
        X: Features of every labelled row.
        y: Target of every labelled row.
        profile: The data profile.
        leaderboard: The comparison that chose it.
        evaluation: Its holdout evaluation.
        data_sha256: Hash of the data file.
        seed: The run's seed.

    Returns:
        The deployment.
    """
    model = clone(pipeline).fit(X, y)
    manifest = {
        "crispml_version": _version("crispml"),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": evaluation.model,
        "estimator": type(model.steps[-1][1]).__name__,
        "task": profile.task,
        "metric": leaderboard.metric,
        "seed": seed,
        "data": {
            "source": profile.source,
            "sha256": data_sha256,
            "rows": profile.n_rows,
            "labelled_rows": len(y),
            "columns": profile.n_columns,
            "target": profile.target,
        },
        "features": {
            "names": list(profile.features),
            "numeric": list(profile.numeric_features),
            "categorical": list(profile.categorical_features),
            "dropped": profile.dropped,
        },
        "classes": [str(c) for c in model.classes_] if profile.task in CLASSIFICATION else [],
        "cv": {"mean": evaluation.cv_mean, "std": evaluation.cv_std, "folds": leaderboard.n_folds},
        "holdout": evaluation.holdout,
        "leaderboard": _json_records(leaderboard.to_frame()),
        "packages": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
    }
    return Deployment(
        name=evaluation.model,
        model=model,
        features=profile.features,
        numeric=profile.numeric_features,
        input_example=X.head(INPUT_EXAMPLE_ROWS),
        manifest=manifest,
    )


def score(model: Any, data: pd.DataFrame, features: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    """Score rows: the input's columns plus `prediction` and, for a classifier, `proba_<class>`.

    Args:
        model: A fitted pipeline.
        data: Rows to score; extra columns are carried through, not used.
        features: The feature columns the model needs.
        numeric: The numeric ones among them.

    Returns:
        A new frame with exactly the input's rows, in order.

    Raises:
        DataError: A feature column is missing, or a numeric one holds text.
    """
    missing = [c for c in features if c not in data.columns]
    if missing:
        raise DataError(
            f"the data to score lacks {len(missing)} column(s) the model needs: {', '.join(missing)}; "
            f"add them (the model needs: {', '.join(features)})"
        )
    for c in numeric:
        converted = pd.to_numeric(data[c], errors="coerce")
        bad = converted.isna() & data[c].notna()
        if bad.any():
            raise DataError(
                f"column '{c}' must be numeric but holds {data[c][bad].iloc[0]!r} (row {int(np.flatnonzero(bad)[0]) + 1}); "
                "fix or blank those cells"
            )
    X = conform_features(data, features, numeric)
    classes = getattr(model, "classes_", None)
    pred, proba = predict_with_proba(model, X, classes)
    out = data.copy()
    out[PREDICTION] = pred
    if proba is not None and classes is not None:
        for i, c in enumerate(classes):
            out[f"{PROBA_PREFIX}{c}"] = proba[:, i]
    return out


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in chunks.

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
