"""Phase 5, deployment: the final model refitted on every labelled row, and its manifest.

The chosen pipeline is refitted on every labelled row. Saving it (MLflow model format,
registry) is the runner's job through `pipeline.tracking`; this module stays pure.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from stages import subsample
from stages.contract import CONTRACT_KEY, DataContract, build_contract
from stages.evaluation import Evaluation
from stages.modeling import Leaderboard, hyperparameters
from stages.tuning import unwrap_search
from stages.understanding import CLASSIFICATION, DataProfile

PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "joblib", "mlflow", "skops")
"""The packages a saved model depends on, pinned in its requirements and manifest."""
INPUT_EXAMPLE_ROWS = 5


@dataclass(frozen=True)
class Deployment:
    """The model to ship.

    Attributes:
        name: The chosen candidate's short name.
        model: Its pipeline, fitted on every labelled row; for a tuned candidate, with the
            search replaced by the estimator it chose (plain estimators only).
        features: Feature columns in training order.
        numeric: The numeric ones among them.
        input_example: A few training rows, as the model expects them.
        manifest: Provenance: data hash, seed, versions, scores, leaderboard, data contract.
        contract: What the model expects as input (saved with it, checked by every scorer).
    """

    name: str
    model: Pipeline
    features: tuple[str, ...]
    numeric: tuple[str, ...]
    input_example: pd.DataFrame
    manifest: dict[str, Any]
    contract: DataContract


def refit_for_deployment(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    profile: DataProfile,
    leaderboard: Leaderboard,
    evaluation: Evaluation,
    data_sha256: str,
    seed: int,
    fitted: Pipeline | None = None,
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
        The deployment. For a tuned candidate the search is run once more on every row,
        and the manifest's `tuning` holds the setting it chose (None for other candidates).
    """
    unwrapped = unwrap_search(fitted if fitted is not None else clone(pipeline).fit(X, y))
    model = subsample.unwrap(unwrapped.model)  # plain scikit-learn types only, nothing from crispml
    tuning = (
        {"search": unwrapped.search, "best_params": unwrapped.best_params, "inner_cv_score": unwrapped.inner_score}
        if unwrapped.search
        else None
    )
    manifest = {
        "crispml_version": _version("crispml"),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": evaluation.model,
        "estimator": type(model.steps[-1][1]).__name__,
        "hyperparameters": hyperparameters(model.steps[-1][1]),
        "tuning": tuning,
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
    contract = build_contract(X, profile)
    return Deployment(
        name=evaluation.model,
        model=model,
        features=profile.features,
        numeric=profile.numeric_features,
        input_example=X.head(INPUT_EXAMPLE_ROWS),
        manifest={**manifest, CONTRACT_KEY: contract.to_dict()},
        contract=contract,
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def json_safe(value: Any) -> Any:
    """A tree of results as plain JSON values: numpy scalars as Python ones, NaN as null, keys as text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json_safe(frame.to_dict(orient="records"))


