"""Every MLflow call crispml makes: runs, metrics, artifacts, models, the registry.

One parent run per pipeline run, with a nested child run per candidate. Nothing here
decides anything; it records what the stages returned.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import Model, infer_signature

from pipeline.errors import ModelLoadError, TrackingError

CHAMPION = "champion"
MODEL_NAME = "model"
SKOPS_TRUSTED_TYPES = [
    # Reviewed types, beyond skops' defaults, that crispml's candidates contain. Loading
    # them runs no user code. Anything else stays untrusted and fails to save or load.
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
]
_PARAM_MAX = 6000


# MLflow sets up its loggers on import; keep its INFO chatter off the console after that.
for _logger in ("mlflow", "alembic"):
    logging.getLogger(_logger).setLevel(logging.WARNING)


@dataclass(frozen=True)
class LoggedModel:
    """Where the logged model went.

    Attributes:
        uri: The URI `log_model` returned (`models:/m-...`).
        registered_name: Registry name, or "" when not registered.
        version: Registry version, or "" when not registered.
    """

    uri: str
    registered_name: str = ""
    version: str = ""


@dataclass(frozen=True)
class LoadedModel:
    """A saved model and the input contract from its signature.

    Attributes:
        model: The fitted scikit-learn pipeline.
        features: Input column names.
        numeric: The numeric (double) ones among them.
    """

    model: Any
    features: tuple[str, ...]
    numeric: tuple[str, ...]


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store's file, else the server's choice.

    Args:
        tracking_uri: The tracking URI.

    Returns:
        A `file://` URI of the folder holding the SQLite file, or None for other stores.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    return Path(_sqlite_path(tracking_uri)).resolve().parent.as_uri()


def _sqlite_path(tracking_uri: str) -> str:
    # sqlite:///relative/path.db and sqlite:////absolute/path.db
    return tracking_uri[len("sqlite:///") :]


def check_store(tracking_uri: str) -> None:
    """Fail early, before any training, when the tracking store cannot be used.

    Args:
        tracking_uri: The tracking URI.

    Raises:
        TrackingError: The store cannot be created, reached or read.
    """

    if urlparse(tracking_uri).scheme == "sqlite":
        folder = Path(_sqlite_path(tracking_uri)).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"cannot create the tracking folder {folder} for {tracking_uri} ({exc.strerror}); "
                "pass a writable --tracking-uri"
            ) from None
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for an unusable store
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"cannot use the MLflow tracking store {tracking_uri} ({first[:200]}); "
            "check the URI, that a server is running there, and that the folder is writable"
        ) from None


class PipelineRun:
    """Logging for one pipeline run: the parent run and its candidates' child runs."""

    def __init__(self, client: Any, experiment_id: str, run_id: str, tracking_uri: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.tracking_uri = tracking_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flat parameters on the parent run."""

        self.client.log_batch(self.run_id, params=[Param(k, _param(v)) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the parent run."""

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log metrics on the parent run; NaN values are skipped."""
        _log_metrics(self.client, self.run_id, metrics)

    def log_json(self, obj: Any, path: str) -> None:
        """Save an object as a JSON artifact of the parent run."""
        self.client.log_text(self.run_id, json.dumps(obj, indent=2, default=str, allow_nan=False), path)

    def log_text(self, text: str, path: str) -> None:
        """Save text as an artifact of the parent run."""
        self.client.log_text(self.run_id, text, path)

    def log_frame(self, frame: pd.DataFrame, path: str) -> None:
        """Save a table as a CSV artifact of the parent run."""
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        self.client.log_text(self.run_id, buffer.getvalue(), path)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        """Copy a local file into the parent run's artifacts."""
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_candidate(
        self,
        name: str,
        estimator: str,
        params: Mapping[str, str],
        ok: bool,
        error: str,
        fold_scores: Mapping[str, tuple[float, ...]],
        metrics: Mapping[str, float],
        warnings: tuple[str, ...],
    ) -> str:
        """One nested child run for a candidate: params, per-fold and summary metrics, status.

        Args:
            name: The candidate's short name (the run name).
            estimator: The estimator's class name.
            params: The estimator's parameters.
            ok: False for a candidate that failed.
            error: Its error, for a failed candidate.
            fold_scores: `{metric: per-fold scores}`, logged with the fold as the step.
            metrics: Summary metrics (means, standard deviations, timings).
            warnings: Warnings raised while fitting.

        Returns:
            The child run's id.
        """

        tags = {
            "mlflow.parentRunId": self.run_id,
            "mlflow.runName": name,
            "crispml.candidate": name,
            "crispml.estimator": estimator,
            "crispml.status": "ok" if ok else "failed",
        }
        if error:
            tags["crispml.error"] = error[:_PARAM_MAX]
        if warnings:
            tags["crispml.warnings"] = "\n".join(warnings)[:_PARAM_MAX]
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        now = int(time.time() * 1000)
        entries = [
            Metric(f"fold_{metric}", value, now, step)
            for metric, scores in fold_scores.items()
            for step, value in enumerate(scores)
            if not math.isnan(value)
        ]
        entries += [Metric(k, v, now, 0) for k, v in metrics.items() if not math.isnan(v)]
        self.client.log_batch(
            run.info.run_id,
            metrics=entries,
            params=[Param(k, _param(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items() if not k.startswith("mlflow.")],
        )
        self.client.set_terminated(run.info.run_id, "FINISHED" if ok else "FAILED")
        return str(run.info.run_id)

    def log_model(
        self, model: Any, input_example: pd.DataFrame, requirements: list[str], registered_name: str
    ) -> LoggedModel:
        """Log the model to the parent run and, when named, register it as `champion`.

        Args:
            model: The fitted pipeline.
            input_example: A few input rows, for the signature and the UI.
            requirements: pip requirements (given, so MLflow does not infer them).
            registered_name: Registry name, or "" to skip registration.

        Returns:
            Where it was logged and registered.
        """

        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints registry progress
            info = mlflow.sklearn.log_model(
                model,
                name=MODEL_NAME,
                signature=_signature(model, input_example),
                input_example=input_example,
                pip_requirements=requirements,
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
                registered_model_name=registered_name or None,
            )
        if not registered_name:
            return LoggedModel(uri=info.model_uri)
        version = str(info.registered_model_version)
        self.client.set_registered_model_alias(registered_name, CHAMPION, version)
        self.client.set_model_version_tag(registered_name, version, "crispml.run_id", self.run_id)
        return LoggedModel(uri=info.model_uri, registered_name=registered_name, version=version)


@contextmanager
def pipeline_run(tracking_uri: str, experiment: str, run_name: str) -> Iterator[PipelineRun]:
    """Open the parent run; end it FINISHED, FAILED, or KILLED (on Ctrl-C).

    Args:
        tracking_uri: The tracking URI; the store must pass `check_store`.
        experiment: Experiment name (created if new; artifacts go beside a SQLite store).
        run_name: The parent run's name.

    Yields:
        The run's logger.
    """

    # log_model works on the active run, so the fluent API must point at this store too.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_root(tracking_uri))
    elif found.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment '{experiment}' was deleted in {tracking_uri}; restore it "
            f"(mlflow experiments restore) or pass another --experiment"
        )
    else:
        experiment_id = found.experiment_id
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
    status = "FAILED"
    try:
        yield PipelineRun(client, experiment_id, run.info.run_id, tracking_uri)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status)


def save_model_dir(model: Any, path: Path, input_example: pd.DataFrame, requirements: list[str]) -> None:
    """Write a model folder in MLflow's format (skops-serialised), loadable by pyfunc and `mlflow models serve`.

    Args:
        model: The fitted pipeline.
        path: A folder that must not exist yet.
        input_example: A few input rows.
        requirements: pip requirements.
    """

    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=_signature(model, input_example),
        input_example=input_example,
        pip_requirements=requirements,
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
    )


def load_model(source: str, tracking_uri: str) -> LoadedModel:
    """Load a model by folder or URI (`models:/name@champion`, `models:/m-...`, `runs:/...`).

    Args:
        source: A model folder written by crispml, or a model URI.
        tracking_uri: The store to resolve `models:/` and `runs:/` URIs against.

    Returns:
        The model and its input contract.

    Raises:
        ModelLoadError: Nothing loadable is there.
    """

    is_uri = "://" in source or source.startswith(("models:", "runs:"))
    if not is_uri and not (Path(source) / "MLmodel").is_file():
        raise ModelLoadError(
            f"no model at {source}: the folder has no MLmodel file; pass a model folder "
            "(<out>/<experiment>/model) or a URI such as models:/<experiment>@champion"
        )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        model = mlflow.sklearn.load_model(source)
        signature = (Model.load(source) if not is_uri else mlflow.models.get_model_info(source)).signature
    except Exception as exc:  # MLflow raises many types for a missing model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load the model {source} ({first[:200]}); check the path or URI and --tracking-uri"
        ) from None
    inputs = signature.inputs.to_dict() if signature is not None else []
    features = tuple(col["name"] for col in inputs)
    numeric = tuple(col["name"] for col in inputs if col["type"] in ("double", "float", "long", "integer"))
    return LoadedModel(model=model, features=features, numeric=numeric)


def _signature(model: Any, input_example: pd.DataFrame) -> Any:
    from mlflow.models import infer_signature

    return infer_signature(input_example, model.predict(input_example))


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float]) -> None:

    now = int(time.time() * 1000)
    entries = [Metric(k, float(v), now, 0) for k, v in metrics.items() if not math.isnan(v)]
    if entries:
        client.log_batch(run_id, metrics=entries)


def _param(value: Any) -> str:
    return str(value)[:_PARAM_MAX]
