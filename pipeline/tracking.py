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
import os
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import Model, infer_signature

from pipeline.errors import ModelLoadError, TrackingError, did_you_mean
from stages.deployment import CONTRACT_KEY, DataContract, contract_from_signature

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
    # Each tree of a fitted HistGradientBoosting model: arrays of nodes and category bitsets.
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
_PARAM_MAX = 6000
STORE_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file", "")
"""URI schemes MLflow can track to (`file` and bare paths are refused by MLflow 3 itself)."""
STORE_TIMEOUT = 10.0
"""Seconds `check_store` waits for a tracking server to answer or a locked SQLite store to free up."""


# MLflow sets up its loggers on import; keep its INFO chatter off the console after that.
for _logger in ("mlflow", "alembic"):
    logging.getLogger(_logger).setLevel(logging.WARNING)
# With an http:// tracking URI, MLflow writes "View run ... at: URL" lines to stdout when a
# run ends, which would corrupt `crispml run --json`. crispml prints the run's id and store itself.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


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
    """A saved model, the data contract saved with it, and what to warn about.

    Attributes:
        model: The fitted scikit-learn pipeline.
        contract: The data contract from the model's metadata (names and kinds from its
            signature only, for a model saved without one).
        warnings: Package versions that differ from the ones that saved the model.
    """

    model: Any
    contract: DataContract
    warnings: tuple[str, ...] = ()


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


def check_store(tracking_uri: str, timeout: float | None = None, writable: bool = False) -> None:
    """Fail early, before any training, when the tracking store cannot be used.

    Checks, in order: the URI's scheme; for a tracking server, that it accepts connections;
    for SQLite, that its folder can be created; with `writable`, that the folder can be
    written and the database can take a write (not read-only, not locked by another
    process for more than `timeout`); then that MLflow can open and read the store. With
    `writable`, a new SQLite store is created under a file lock, so two runs starting at
    once against a fresh `mlruns/` do not both create its tables.

    Args:
        tracking_uri: The tracking URI.
        timeout: Seconds to wait for a server to accept a connection, or for a lock
            (default `STORE_TIMEOUT`).
        writable: Also check that a run could be written (what `crispml run` needs; a
            viewer needs only to read).

    Raises:
        TrackingError: The store cannot be created, reached, written or read.
    """
    timeout = STORE_TIMEOUT if timeout is None else timeout
    scheme = urlparse(tracking_uri).scheme
    if len(scheme) == 1:  # a Windows drive letter: a plain path
        scheme = ""
    if scheme not in STORE_SCHEMES:
        raise TrackingError(
            f"tracking URI {tracking_uri} has an unknown scheme '{scheme}'{did_you_mean(scheme, STORE_SCHEMES)}; "
            "use sqlite:///path/to/mlflow.db or the http(s):// address of a tracking server"
        )
    if scheme in ("http", "https"):
        _check_server(tracking_uri, timeout)
    database = Path(_sqlite_path(tracking_uri)) if scheme == "sqlite" else None
    if database is not None:
        _check_sqlite_folder(tracking_uri, database.parent, writable)
    with _store_lock(database if writable else None):
        if writable and database is not None and database.is_file():
            _check_sqlite_writable(tracking_uri, database, timeout)
        try:
            MlflowClient(tracking_uri).search_experiments(max_results=1)
        except Exception as exc:  # MLflow raises many types for an unusable store
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingError(
                f"cannot use the MLflow tracking store {tracking_uri} ({first[:200]}); "
                "check the URI, that a server is running there, and that the folder is writable"
            ) from None


def _check_server(tracking_uri: str, timeout: float) -> None:
    """MLflow retries an unreachable server for minutes; one quick connection attempt says it sooner."""
    parsed = urlparse(tracking_uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {tracking_uri} ({why}); start it "
            "(mlflow server ...) or pass another --tracking-uri"
        ) from None


def _check_sqlite_folder(tracking_uri: str, folder: Path, writable: bool) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(
            f"cannot create the tracking folder {folder} for {tracking_uri} ({exc.strerror}); "
            "pass a writable --tracking-uri"
        ) from None
    if not writable:
        return
    try:  # SQLite writes a journal beside the database, and artifacts go here too
        with tempfile.TemporaryFile(dir=folder, prefix=".crispml-probe-"):
            pass
    except OSError as exc:
        raise TrackingError(
            f"the tracking folder {folder} for {tracking_uri} is not writable ({exc.strerror}); "
            "make it writable or pass another --tracking-uri"
        ) from None


def _check_sqlite_writable(tracking_uri: str, database: Path, timeout: float) -> None:
    """A write that is rolled back: proves the database is writable and not locked, and leaves no trace."""
    try:
        connection = sqlite3.connect(database, timeout=timeout)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE crispml_write_probe (x INTEGER)")
            connection.rollback()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        message = str(exc)
        if "locked" in message or "busy" in message:
            raise TrackingError(
                f"the tracking database {database} ({tracking_uri}) is locked by another process; waited "
                f"{timeout:g} s; stop what holds it (an open sqlite3 shell, a crashed process) or pass another --tracking-uri"
            ) from None
        raise TrackingError(
            f"cannot write to the tracking database {database} ({tracking_uri}): {message}; "
            "check the file and its folder are writable, or pass another --tracking-uri"
        ) from None


@contextmanager
def _store_lock(database: Path | None) -> Iterator[None]:
    """Serialise store creation between processes (MLflow creates a new SQLite store's tables unlocked)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        fcntl = None
    if database is None or fcntl is None:
        yield
        return
    with open(database.parent / f".{database.name}.lock", "a+") as handle:  # beside the database: one per store
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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

    def log_files(self, files: Mapping[str, bytes], folder: str) -> None:
        """Save in-memory files (PNG plots, say) as artifacts of the parent run, in one upload.

        Args:
            files: `{file name: content}`.
            folder: The artifact folder they go in (`plots`, `understanding`).
        """
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
            for name, content in files.items():
                (Path(tmp) / name).write_bytes(content)
            self.client.log_artifacts(self.run_id, tmp, folder)

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
        extra_tags: Mapping[str, str] | None = None,
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
            extra_tags: More tags, e.g. where the fits ran.

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
        tags.update({k: v[:_PARAM_MAX] for k, v in (extra_tags or {}).items()})
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
        self,
        model: Any,
        input_example: pd.DataFrame,
        requirements: list[str],
        registered_name: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> LoggedModel:
        """Log the model to the parent run and, when named, register it as `champion`.

        Args:
            model: The fitted pipeline.
            input_example: A few input rows, for the signature and the UI.
            requirements: pip requirements (given, so MLflow does not infer them).
            registered_name: Registry name, or "" to skip registration.
            metadata: Stored in the model's `MLmodel` file (the data contract travels there).

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
                metadata=dict(metadata) if metadata else None,
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
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_root(tracking_uri))
        except mlflow.exceptions.MlflowException:
            found = client.get_experiment_by_name(experiment)  # another run created it just now
            if found is None:
                raise
            experiment_id = found.experiment_id
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


def copy_logged_model(model_uri: str, path: Path, tracking_uri: str) -> None:
    """Copy a logged model's folder out of the store, byte for byte (no second serialisation).

    Args:
        model_uri: The URI `log_model` returned (`models:/m-...`).
        path: A folder that must not exist yet.
        tracking_uri: The store it was logged to.
    """
    Path(path).mkdir(parents=True)
    mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(path), tracking_uri=tracking_uri)


def is_model_uri(source: str) -> bool:
    """Whether a model source is a URI (`models:/...`, `runs:/...`, `s3://...`) rather than a folder.

    Args:
        source: A model folder or URI, as given to `--model`.

    Returns:
        True for a URI.
    """
    return "://" in source or source.startswith(("models:", "runs:"))


@contextmanager
def _loading(source: str, tracking_uri: str) -> Iterator[None]:
    """Check that a model folder has an `MLmodel` file and point MLflow at the store; load in the block.

    Raises:
        ModelLoadError: The folder has no `MLmodel` file, or loading in the block failed.
    """
    if not is_model_uri(source) and not (Path(source) / "MLmodel").is_file():
        raise ModelLoadError(
            f"no model at {source}: the folder has no MLmodel file; pass a model folder "
            "(<out>/<experiment>/model) or a URI such as models:/<experiment>@champion"
        )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    except Exception as exc:  # MLflow raises many types for a missing model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load the model {source} ({first[:200]}); check the path or URI and --tracking-uri"
        ) from None


def load_model(source: str, tracking_uri: str) -> LoadedModel:
    """Load a model by folder or URI (`models:/name@champion`, `models:/m-...`, `runs:/...`).

    Args:
        source: A model folder written by crispml, or a model URI.
        tracking_uri: The store to resolve `models:/` and `runs:/` URIs against.

    Returns:
        The model, its data contract, and warnings about package versions.

    Raises:
        ModelLoadError: Nothing loadable is there, or its data contract is malformed.
    """
    with _loading(source, tracking_uri):
        info = mlflow.models.get_model_info(source) if is_model_uri(source) else Model.load(source)
        model = mlflow.sklearn.load_model(source)
    contract = model_contract(info, source)
    return LoadedModel(
        model=model,
        contract=contract,
        warnings=version_warnings(info, source),
    )


def model_contract(info: Any, source: str) -> DataContract:
    """The data contract saved in a model's metadata, or one from its signature for a model saved without.

    Args:
        info: The model's `Model` or `ModelInfo` (from its `MLmodel` file).
        source: Where it came from, for messages.

    Returns:
        The contract.

    Raises:
        ModelLoadError: The saved contract is malformed.
    """
    saved = (info.metadata or {}).get(CONTRACT_KEY)
    if saved is not None:
        try:
            return DataContract.from_dict(saved)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"the data contract saved with {source} is malformed ({exc}); re-export the model") from None
    signature = info.signature
    inputs = signature.inputs.to_dict() if signature is not None else []
    features = tuple(col["name"] for col in inputs)
    numeric = tuple(col["name"] for col in inputs if col["type"] in ("double", "float", "long", "integer"))
    return contract_from_signature(features, numeric)


def version_warnings(info: Any, source: str) -> tuple[str, ...]:
    """Warnings for scikit-learn and MLflow versions that differ from the ones that saved a model.

    Args:
        info: The model's `Model` or `ModelInfo`.
        source: Where it came from, for messages.

    Returns:
        One line per differing package.
    """
    saved = {
        "scikit-learn": (info.flavors or {}).get("sklearn", {}).get("sklearn_version"),
        "mlflow": info.mlflow_version,
    }
    warnings = []
    for package, version in saved.items():
        try:
            installed = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            installed = "none"
        if version and installed != version:
            warnings.append(
                f"{source} was saved with {package} {version} but {installed} is installed; predictions may "
                f"differ: install {package}=={version} to be sure"
            )
    return tuple(warnings)


def _signature(model: Any, input_example: pd.DataFrame) -> Any:
    return infer_signature(input_example, model.predict(input_example))


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float]) -> None:

    now = int(time.time() * 1000)
    entries = [Metric(k, float(v), now, 0) for k, v in metrics.items() if not math.isnan(v)]
    if entries:
        client.log_batch(run_id, metrics=entries)


def _param(value: Any) -> str:
    return str(value)[:_PARAM_MAX]


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a SQLite tracking store.

    Args:
        tracking_uri: The tracking URI.

    Returns:
        The file (relative URIs stay relative to the working folder), or None for other stores.
    """
    if urlparse(tracking_uri).scheme != "sqlite":
        return None
    return Path(_sqlite_path(tracking_uri))


def experiment_id(tracking_uri: str, name: str) -> str | None:
    """The id of a live experiment, for links into the MLflow UI.

    Args:
        tracking_uri: The tracking URI; the store must pass `check_store`.
        name: The experiment's name.

    Returns:
        Its id, or None when the store has no live experiment of that name.
    """
    found = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if found is None or found.lifecycle_stage == "deleted":
        return None
    return str(found.experiment_id)


@dataclass(frozen=True)
class ScoringApp:
    """MLflow's scoring server for one model, and the model's data contract.

    Attributes:
        app: The ASGI application (`/ping`, `/health`, `/version`, `/invocations`).
        contract: The data contract saved with the model (names and kinds from its
            signature only, for a model saved without one).
    """

    app: Any
    contract: DataContract


def scoring_app(source: str, tracking_uri: str) -> ScoringApp:
    """Load a model as a pyfunc and build MLflow's scoring server for it (what `mlflow models serve` runs).

    Args:
        source: A model folder written by crispml, or a model URI (`models:/name@champion`).
        tracking_uri: The store to resolve `models:/` and `runs:/` URIs against.

    Returns:
        The server application and the model's data contract.

    Raises:
        ModelLoadError: Nothing loadable is there, or its data contract is malformed.
    """
    from mlflow.pyfunc import scoring_server

    with _loading(source, tracking_uri):
        model = mlflow.pyfunc.load_model(source)
    return ScoringApp(app=scoring_server.init(model), contract=model_contract(model.metadata, source))
