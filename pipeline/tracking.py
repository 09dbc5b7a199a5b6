"""Every MLflow call crispml makes: runs, metrics, artifacts, models, the registry.

One parent run per pipeline run, with a nested child run per candidate. Nothing here
decides anything; it records what the stages returned.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import json
import logging
import math
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import Model, ModelSignature, infer_signature

from pipeline import interrupts
from pipeline.errors import CrispmlError, ModelLoadError, TrackingError, did_you_mean, first_line
from pipeline.files import is_bytecode_cache
from stages import crispml_pyfunc
from pipeline.files import sha256_of
from stages.contract import CONTRACT_KEY, DataContract, contract_from_signature

CHAMPION = "champion"
CHALLENGER = "challenger"
"""The alias of the latest version that passed its gate but not the comparison with `champion`."""
CHAMPION_RECORD = "challenge/record.npz"
"""The run artifact that lets a later run compare against this run's model fairly (`stages.challenge`)."""
CHAMPION_RECORD_TAG = "crispml.challenge_record_sha256"
"""The record's SHA-256, a tag of its run: a record edited in the store is not used."""
MODEL_NAME = "model"
_PARAM_MAX = 6000
STORE_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file", "")
"""URI schemes MLflow can track to (`file` and bare paths are refused by MLflow 3 itself)."""
STORE_TIMEOUT = 10.0
"""Seconds `check_store` waits for a locked SQLite store to free up."""
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
"""Bounds on every call MLflow makes to a tracking server: seconds to connect and then to wait
for each answer, retries, and the backoff between them (MLflow's own defaults, 120 s and 7
retries with a factor of 2, let a silent server hold a command for many minutes). Each is an
MLflow environment variable; one the user set is kept."""


# MLflow sets up its loggers on import; keep its INFO chatter off the console after that.
for _logger in ("mlflow", "alembic"):
    logging.getLogger(_logger).setLevel(logging.WARNING)
# With an http:// tracking URI, MLflow writes "View run ... at: URL" lines to stdout when a
# run ends, which would corrupt `crispml run --json`. crispml prints the run's id and store itself.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
for _name, _value in HTTP_LIMITS.items():
    os.environ.setdefault(_name, _value)


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


def for_mlflow(tracking_uri: str) -> str:
    """The URI to hand MLflow: a relative SQLite path made absolute, other URIs as they are.

    MLflow caches a store by its URI string, so a relative `sqlite:///mlruns/mlflow.db`
    would keep pointing at the folder that was current when it was first used, even after
    the process changes folder (a notebook, a test, a script running several projects).
    crispml's messages keep the URI as the user gave it; only MLflow gets the absolute one.

    Args:
        tracking_uri: The tracking URI as configured.

    Returns:
        The same store, with an absolute path for SQLite.
    """
    database = sqlite_file(tracking_uri)
    if database is None or database.is_absolute() or tracking_uri.startswith("sqlite:///:memory:"):
        return tracking_uri
    return f"sqlite:///{database.absolute()}"


def point_mlflow_at(tracking_uri: str) -> None:
    """Point MLflow's fluent API (`start_run`, `log_model`, `load_model`) at a store, and only it.

    `mlflow.set_tracking_uri` also writes `MLFLOW_TRACKING_URI` (and the registry's
    variable) into this process's environment, for subprocesses to inherit. crispml reads
    that variable as the user's own setting, so a second run in the same process (a
    notebook, a script, a test) would log to the first run's store. The variables are put
    back as they were; the fluent API keeps the URI it was given.

    Args:
        tracking_uri: The tracking URI as configured.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(for_mlflow(tracking_uri))
    mlflow.set_registry_uri(for_mlflow(tracking_uri))
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# MLflow warns about the `Any` in its own pyfunc type hints (`params: dict[str, Any]`) when it
# loads a model. crispml's quiet blocks hide MLflow's noise with `catch_warnings`, which is not
# thread-safe: on a busy machine this one landed on stderr under `--json`. A filter set once,
# when this module is imported, holds in every thread.
warnings.filterwarnings("ignore", message="Any type hint is inferred as AnyType", category=UserWarning)

RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"
"""The run page's description (markdown)."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"
"""The experiment tag the MLflow UI charts first: crispml sets it to `holdout_<metric>` unless the user chose another."""
"""MLflow 3's UI opens an experiment of this kind in its model-training view, not the GenAI one."""

PREWARMED = ("skops.io", "mlflow.pyfunc", "mlflow.models.signature")
"""Modules `log_model` imports on first use: skops alone takes about a second."""


def prewarm() -> None:
    """Import what logging the model will need in a background thread, while the fits run.

    The fits run in worker processes and this process mostly waits for them, so the
    imports cost nothing on the way to the answer. Imports only: nothing is written, and a
    module that fails to import here is imported (and fails) where it is used.
    """

    def warm() -> None:
        for name in PREWARMED:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=warm, name="crispml-prewarm", daemon=True).start()


def check_store(tracking_uri: str, timeout: float | None = None, writable: bool = False) -> None:
    """Fail early, before any training, when the tracking store cannot be used.

    Checks, in order: the URI's scheme; for a tracking server, that it accepts a connection
    and answers an HTTP request within `timeout`; for SQLite, that its folder can be
    created, and that an existing database is a file, an SQLite database, and not locked
    for more than `timeout`; with `writable`, that the folder can be written and the
    database can take a write (not read-only); then that MLflow can open and read the
    store, with MLflow's own logging silenced, so a failure prints crispml's one line only.
    With `writable`, a new SQLite store is created under a file lock, so two runs starting
    at once against a fresh `mlruns/` do not both create its tables.

    Args:
        tracking_uri: The tracking URI.
        timeout: Seconds to wait for a server to connect and answer (default: `http_timeout()`,
            from `MLFLOW_HTTP_REQUEST_TIMEOUT`), or for a locked SQLite database (default
            `STORE_TIMEOUT`).
        writable: Also check that a run could be written (what `crispml run` needs; a
            viewer needs only to read).

    Raises:
        TrackingError: The store cannot be created, reached, written or read.
    """
    scheme = urlparse(tracking_uri).scheme
    if len(scheme) == 1:  # a Windows drive letter: a plain path
        scheme = ""
    if scheme not in STORE_SCHEMES:
        raise TrackingError(
            f"tracking URI {tracking_uri} has an unknown scheme '{scheme}'{did_you_mean(scheme, STORE_SCHEMES)}; "
            "use sqlite:///path/to/mlflow.db or the http(s):// address of a tracking server"
        )
    if scheme in ("http", "https"):
        _check_server(tracking_uri, http_timeout() if timeout is None else timeout)
    timeout = STORE_TIMEOUT if timeout is None else timeout
    database = Path(_sqlite_path(tracking_uri)) if scheme == "sqlite" else None
    if database is not None:
        _check_sqlite_folder(tracking_uri, database.parent, writable)
    revision = None
    if database is not None and (database.exists() or database.is_symlink()):  # before the lock file is made
        revision = _check_sqlite_file(tracking_uri, database, timeout)
    with _store_lock(database if writable else None):
        if writable and database is not None and database.is_file():
            _check_sqlite_writable(tracking_uri, database, timeout)
        try:
            with quiet_mlflow():
                MlflowClient(for_mlflow(tracking_uri)).search_experiments(max_results=1)
        except Exception as exc:  # MLflow raises many types for an unusable store
            if database is not None and revision is not None:
                _check_sqlite_schema(tracking_uri, database, revision)
            if scheme in ("http", "https") and ("timed out" in str(exc) or "timeout" in str(exc).lower()):
                raise TrackingError(
                    f"the MLflow tracking server at {tracking_uri} accepted a connection but did not answer an API request "
                    f"within {http_timeout()} s, {os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES')} retries included "
                    "(MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_HTTP_REQUEST_MAX_RETRIES); check that the server is not stuck "
                    "or overloaded, set MLFLOW_HTTP_REQUEST_TIMEOUT higher to wait longer, or pass another --tracking-uri"
                ) from None
            first = first_line(exc)
            raise TrackingError(
                f"cannot use the MLflow tracking store {tracking_uri} ({first[:200]}); "
                "check the URI, that a server is running there, and that the folder is writable"
            ) from None


def http_timeout() -> int:
    """Seconds one call to a tracking server may wait to connect, and then for each answer.

    Returns:
        `MLFLOW_HTTP_REQUEST_TIMEOUT` (crispml sets it to `HTTP_LIMITS`' value unless it is set).

    Raises:
        TrackingError: The variable is not a positive whole number of seconds (MLflow reads it as one).
    """
    value = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise TrackingError(
            f"MLFLOW_HTTP_REQUEST_TIMEOUT={value!r} is not a positive whole number of seconds; "
            f"set it to one (crispml's default is {HTTP_LIMITS['MLFLOW_HTTP_REQUEST_TIMEOUT']}) or unset it"
        )
    return seconds


def _check_server(tracking_uri: str, timeout: float) -> None:
    """One quick connection and one HTTP request with no retries: MLflow's own calls retry, so they say it later.

    A server that answers anything (even 401 or 404) is up; MLflow's own call then says
    what is wrong with it. One that accepts the connection and says nothing is stuck.
    """
    import requests

    parsed = urlparse(tracking_uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError):
            why = f"no answer to a connection within {timeout:g} s"
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {tracking_uri} ({why}); start it "
            "(mlflow server ...) or pass another --tracking-uri"
        ) from None
    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=(timeout, timeout), allow_redirects=False).close()
    except requests.exceptions.SSLError:  # it speaks TLS: MLflow's call, with its certificate settings, goes on
        pass
    except requests.exceptions.Timeout:
        raise TrackingError(
            f"the MLflow tracking server at {tracking_uri} accepted a connection but did not answer within "
            f"{timeout:g} s (MLFLOW_HTTP_REQUEST_TIMEOUT); check that an MLflow server is running there and "
            "is not stuck, set MLFLOW_HTTP_REQUEST_TIMEOUT higher to wait longer, or pass another --tracking-uri"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {tracking_uri} ({type(exc).__name__}); start it "
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


def _check_sqlite_file(tracking_uri: str, database: Path, timeout: float) -> str | None:
    """An existing database is a readable SQLite file that is MLflow's (or empty); returns its schema revision.

    MLflow retries a database it cannot open for about 100 s, logging each attempt: this
    says what is wrong at once.
    """
    where = f"the tracking database {database} ({tracking_uri})"
    fix = f"pass sqlite:///{database / 'mlflow.db'}, or another --tracking-uri"
    if database.is_dir():
        raise TrackingError(f"{where} is a folder, not a database file; {fix}")
    if not database.is_file():
        raise TrackingError(f"{where} is not a regular file (a broken link, a device or a pipe); pass another --tracking-uri")
    try:
        connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone() if "alembic_version" in tables else None
        finally:
            connection.close()
    except sqlite3.Error as exc:
        message = str(exc)
        if "locked" in message or "busy" in message:
            raise _locked(tracking_uri, database, timeout) from None
        if "not a database" in message:
            raise TrackingError(
                f"{where} is not an SQLite database ({message}); pass the store 'crispml run' wrote "
                "(sqlite:///mlruns/mlflow.db by default) or another --tracking-uri"
            ) from None
        raise TrackingError(f"cannot read {where} ({message}); check that the file is readable, or pass another --tracking-uri") from None
    if tables and "alembic_version" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise TrackingError(
            f"{where} is an SQLite database but not an MLflow store (its tables: {shown}); "
            "pass the store 'crispml run' wrote (sqlite:///mlruns/mlflow.db by default) or another --tracking-uri"
        )
    return str(row[0]) if row else None


def _check_sqlite_schema(tracking_uri: str, database: Path, revision: str) -> None:
    """After MLflow refused a store: say whether its schema is newer or older than this MLflow's."""
    from alembic.script import ScriptDirectory

    try:
        script = ScriptDirectory(str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
        if revision == script.get_current_head():
            return
        known = script.get_revision(revision) is not None
    except Exception:  # alembic raises its own types for an unknown revision
        known = False
    where = f"the tracking database {database} ({tracking_uri})"
    if not known:
        raise TrackingError(
            f"{where} was written by a newer MLflow than the installed {mlflow.__version__} (its schema "
            f"revision {revision} is unknown here); install the MLflow that wrote it "
            "(pip install -U mlflow) or pass another --tracking-uri"
        )
    raise TrackingError(
        f"{where} has the schema of an older MLflow (revision {revision}); back it up, then run "
        f"'mlflow db upgrade {tracking_uri}', or pass another --tracking-uri"
    )


def _locked(tracking_uri: str, database: Path, timeout: float) -> TrackingError:
    return TrackingError(
        f"the tracking database {database} ({tracking_uri}) is locked by another process; waited "
        f"{timeout:g} s; stop what holds it (an open sqlite3 shell, a crashed process) or pass another --tracking-uri"
    )


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
            raise _locked(tracking_uri, database, timeout) from None
        raise TrackingError(
            f"cannot write to the tracking database {database} ({tracking_uri}): {message}; "
            "check the file and its folder are writable, or pass another --tracking-uri"
        ) from None


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's, alembic's, SQLAlchemy's and urllib3's logging and warnings in the block.

    Around calls whose failure crispml reports itself in one line: MLflow logs each retry
    of a store it cannot open, urllib3 each retry of a request, and MLflow warns about
    what it is about to raise.
    """
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic", "sqlalchemy", "urllib3")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


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


_Write = TypeVar("_Write", bound=Callable[..., Any])


def _store_write(method: _Write) -> _Write:
    """A write to the store, done whole: a signal that arrives during it is raised once it is done."""

    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        with interrupts.held():
            return method(*args, **kwargs)

    return write  # type: ignore[return-value]


class PipelineRun:
    """Logging for one pipeline run: the parent run, its candidates' child runs, and its registry version.

    Every method is one write to the store, done whole even if a signal arrives during it
    (`pipeline.interrupts`). The registry moves only in `commit`, the run's last step.
    """

    def __init__(self, client: Any, experiment_id: str, run_id: str, tracking_uri: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.committed = False
        self._registering = ""  # the registered model a version of this run is (being) created in
        self._version = ""
        self._alias = CHAMPION  # the alias `commit` moves
        self._previous: str | None = None  # the version the alias named before `commit` moved it
        self._ended = ""  # the status the run was ended with
        self._commit_tags: tuple[str, ...] = ()

    @_store_write
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flat parameters on the parent run."""

        self.client.log_batch(self.run_id, params=[Param(k, _param(v)) for k, v in params.items()])

    @_store_write
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the parent run."""

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_store_write
    def log_champion_record(self, content: bytes) -> None:
        """Save this run's champion record (`CHAMPION_RECORD`) with its SHA-256 as a tag, so an edit is noticed."""
        with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
            path = Path(tmp) / Path(CHAMPION_RECORD).name
            path.write_bytes(content)
            self.client.log_artifact(self.run_id, str(path), str(Path(CHAMPION_RECORD).parent))
        self.client.set_tag(self.run_id, CHAMPION_RECORD_TAG, hashlib.sha256(content).hexdigest())

    @_store_write
    def mark_primary_metric(self, metric: str) -> None:
        """Tell the MLflow UI the experiment's primary metric (`holdout_<metric>`), unless the user set another.

        Args:
            metric: The run's primary metric.
        """
        current = (self.client.get_experiment(self.experiment_id).tags or {}).get(PRIMARY_METRIC_TAG, "")
        if not current or current.startswith("holdout_"):
            self.client.set_experiment_tag(self.experiment_id, PRIMARY_METRIC_TAG, f"holdout_{metric}")

    @_store_write
    def describe(self, name: str, description: str) -> None:
        """Rename the parent run and give it a description (the run page's markdown note).

        Args:
            name: A name a person can tell apart from the others (the chosen model, its score).
            description: Markdown: why it was chosen, its holdout score, the gate.
        """
        self.client.log_batch(self.run_id, tags=[RunTag(RUN_NAME_TAG, name[:250]), RunTag(NOTE_TAG, description)])

    @_store_write
    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log metrics on the parent run; NaN values are skipped."""
        _log_metrics(self.client, self.run_id, metrics)

    @_store_write
    def log_json(self, obj: Any, path: str) -> None:
        """Save an object as a JSON artifact of the parent run."""
        self.client.log_text(self.run_id, json.dumps(obj, indent=2, default=str, allow_nan=False), path)

    @_store_write
    def log_text(self, text: str, path: str) -> None:
        """Save text as an artifact of the parent run."""
        self.client.log_text(self.run_id, text, path)

    @_store_write
    def log_frame(self, frame: pd.DataFrame, path: str) -> None:
        """Save a table as a CSV artifact of the parent run."""
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        self.client.log_text(self.run_id, buffer.getvalue(), path)

    @_store_write
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

    @_store_write
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
        status = "FAILED"  # a child run is never left RUNNING, even when logging its results fails
        try:
            self.client.log_batch(
                run.info.run_id,
                metrics=entries,
                params=[Param(k, _param(v)) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items() if not k.startswith("mlflow.")],
            )
            status = "FINISHED" if ok else "FAILED"
        finally:
            self.client.set_terminated(run.info.run_id, status)
        return str(run.info.run_id)

    @_store_write
    def log_model(
        self,
        model: Any,
        input_example: pd.DataFrame,
        requirements: list[str],
        trusted_types: Sequence[str],
        metadata: Mapping[str, Any] | None = None,
    ) -> LoggedModel:
        """Log the model to the parent run, unregistered (`register` and `commit` do that).

        Its files' SHA-256 are recorded in the tracking database (`record_model_files`), so
        loading it by URI checks them.

        Args:
            model: The fitted pipeline.
            input_example: A few input rows, for the signature and the UI.
            requirements: pip requirements (given, so MLflow does not infer them).
            trusted_types: The types beyond skops' defaults the model may hold
                (`stages.modeling.trusted_types`); anything else fails to save or load.
            metadata: Stored in the model's `MLmodel` file (the data contract travels there),
                each value as one JSON string: MLflow parses that file (pure-Python YAML)
                several times while logging, and on 3,000 columns a YAML tree of the
                contract alone took 25 s to parse.

        Returns:
            Where it was logged.
        """
        contract = (metadata or {}).get(CONTRACT_KEY)
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=_CONTRACT_FLAVOR if contract is not None else mlflow.sklearn,
            sk_model=model,
            signature=_signature(model, input_example, contract),
            input_example=input_example,
            pip_requirements=requirements,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(trusted_types),
            code_paths=[str(PYFUNC_LOADER)] if contract is not None else None,
            metadata={k: json.dumps(v, separators=(",", ":")) for k, v in metadata.items()} if metadata else None,
        )
        record_model_files(self.client, info.model_id, self.tracking_uri)  # checked whenever it is loaded by URI
        return LoggedModel(uri=info.model_uri)

    @_store_write
    def register(self, logged: LoggedModel, name: str, description: str = "", model_description: str = "") -> LoggedModel:
        """Create a new version of the registered model `name` from the logged model; move no alias.

        The version is tagged `crispml.run_id`. Unless `commit` follows, the end of the run
        deletes it again (`pipeline_run`).

        Args:
            logged: What `log_model` returned.
            name: The registered model's name (created if new).
            description: The new version's description (the registry's page for it).
            model_description: The registered model's description, set when it has none yet.

        Returns:
            The logged model with its registry name and version.
        """
        self._registering = name  # set first: a version created by a call that then fails is found by its run
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints registry progress
            version = mlflow.register_model(logged.uri, name, tags={"crispml.run_id": self.run_id})
        self._version = str(version.version)
        if description:
            self.client.update_model_version(name, self._version, description=description)
        if model_description and not self.client.get_registered_model(name).description:
            self.client.update_registered_model(name, description=model_description)
        return LoggedModel(uri=logged.uri, registered_name=name, version=self._version)

    @_store_write
    def champion(self, name: str) -> Champion | None:
        """The registered model's current `champion`: its version, its run and the record that run kept.

        Args:
            name: The registered model's name.

        Returns:
            None when the model is not registered or has no `champion`.
        """
        try:
            version = self.client.get_model_version_by_alias(name, CHAMPION)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # no such model, or no alias
                return None
            first = first_line(exc)
            raise TrackingError(
                f"cannot look up the champion of `{name}` in the registry at {self.tracking_uri} ({first[:200]}); "
                "the run compares a new model with it before it moves: check the store and run again"
            ) from None
        record, problem = None, ""
        try:
            folder = str(Path(CHAMPION_RECORD).parent)
            listed = {info.path for info in self.client.list_artifacts(version.run_id, folder)} if version.run_id else set()
            content = b""
            if CHAMPION_RECORD in listed:  # a record that is there but cannot be read is the store's failure, not "none"
                with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
                    content = Path(self.client.download_artifacts(version.run_id, CHAMPION_RECORD, tmp)).read_bytes()
                expected = self.client.get_run(version.run_id).data.tags.get(CHAMPION_RECORD_TAG)
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            first = first_line(exc)
            raise TrackingError(
                f"cannot read the record of champion version {version.version} of `{name}` from {self.tracking_uri} "
                f"({first[:200]}); the run compares a new model with it before it moves: check the store and run again"
            ) from None
        if CHAMPION_RECORD in listed:
            if expected is None:
                problem = f"was never sealed (its run has no {CHAMPION_RECORD_TAG} tag)"
            elif expected != hashlib.sha256(content).hexdigest():
                problem = f"does not match the SHA-256 its run recorded ({CHAMPION_RECORD_TAG}): it changed in the store"
            else:
                record = content
        return Champion(
            name=name,
            version=str(version.version),
            run_id=str(version.run_id or ""),
            uri=f"models:/{name}/{version.version}",
            record=record,
            record_problem=problem,
        )

    @_store_write
    def commit(self, tags: Mapping[str, Any] | None = None, alias: str = CHAMPION) -> None:
        """The run's last step: set its closing tags, end it FINISHED, then point `alias` at its version.

        The alias moves only once the run has succeeded, so a process killed at any moment
        leaves it on a finished run, or where it was. Calling it again does nothing.

        Args:
            tags: Tags that hold only for a run that succeeded (where its export is); removed
                again if the commit fails.
            alias: `champion`, or `challenger` for a version that lost the comparison with it.

        Raises:
            TrackingError: The store refused a write; the run then ends FAILED (`pipeline_run`).
        """
        if self.committed:
            return
        try:
            if tags:
                self._commit_tags = tuple(tags)
                self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            mlflow.end_run("FINISHED")
            self._ended = "FINISHED"
            if self._version:
                self._alias = alias
                self._previous = _alias_version(self.client, self._registering, alias)
                self.client.set_registered_model_alias(self._registering, alias, self._version)
        except mlflow.exceptions.MlflowException as exc:
            first = first_line(exc)
            raise TrackingError(
                f"cannot record the end of run {self.run_id} in the tracking store {self.tracking_uri} ({first[:200]}); "
                "the registry and the export are left as they were: check the store and run again"
            ) from None
        self.committed = True

    def _abandon(self, status: str) -> None:
        """End an uncommitted run FAILED or KILLED and undo what it did to the registry."""
        if self._registering:
            alias = self._alias
            with contextlib.suppress(Exception):  # undo what can be undone; ending the run comes next
                if self._version and _alias_version(self.client, self._registering, alias) == self._version:
                    if self._previous is None:
                        self.client.delete_registered_model_alias(self._registering, alias)
                    else:
                        self.client.set_registered_model_alias(self._registering, alias, self._previous)
            with contextlib.suppress(Exception):
                for version in self.client.search_model_versions(f"run_id = '{self.run_id}'"):
                    if version.name == self._registering:
                        self.client.delete_model_version(version.name, version.version)
        for key in self._commit_tags:
            with contextlib.suppress(Exception):
                self.client.delete_tag(self.run_id, key)
        if self._ended:  # the commit ended it FINISHED, then failed
            self.client.set_terminated(self.run_id, status)
        else:
            mlflow.end_run(status)
        self._ended = status


@dataclass(frozen=True)
class Champion:
    """The version a registered model's `champion` alias points at.

    Attributes:
        name: The registered model.
        version: Its version number.
        run_id: The run that logged it.
        uri: `models:/<name>/<version>`: this version, even if the alias moves meanwhile.
        record: Its run's `challenge/record.npz`, or None (a model logged before records were kept,
            or a record that fails its check).
        record_problem: Why a record that is there is not used ("" when it is, or there is none).
    """

    name: str
    version: str
    run_id: str
    uri: str
    record: bytes | None
    record_problem: str = ""


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when it is not set."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


@contextmanager
def pipeline_run(tracking_uri: str, experiment: str, run_name: str) -> Iterator[PipelineRun]:
    """Open the parent run; end it FINISHED, FAILED, or KILLED (on Ctrl-C or SIGTERM).

    A block that ends normally commits the run (`PipelineRun.commit`) if it has not
    already. A block that raises before the commit ends the run FAILED (KILLED for a
    signal) and leaves the registry as it found it: the version `register` created is
    deleted and `champion` points where it did. Starting and ending the run are writes
    done whole, even if a signal arrives during them.

    Args:
        tracking_uri: The tracking URI; the store must pass `check_store`.
        experiment: Experiment name (created if new; artifacts go beside a SQLite store).
        run_name: The parent run's name.

    Yields:
        The run's logger.
    """

    # log_model works on the active run, so the fluent API must point at this store too.
    point_mlflow_at(tracking_uri)
    client = MlflowClient(for_mlflow(tracking_uri), registry_uri=for_mlflow(tracking_uri))
    tracker: PipelineRun | None = None
    status = "FAILED"
    try:
        with interrupts.held():  # a signal now is raised once the run exists, so that it ends KILLED
            run = _start_run(client, tracking_uri, experiment, run_name)
            tracker = PipelineRun(client, run.info.experiment_id, run.info.run_id, tracking_uri)
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            with interrupts.held():
                if status == "FINISHED":
                    tracker.commit()
                elif not tracker.committed:
                    tracker._abandon(status)


def _start_run(client: Any, tracking_uri: str, experiment: str, run_name: str) -> Any:
    """Start the parent run in the experiment, creating the experiment if it is new."""
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
    if found is None or EXPERIMENT_KIND_TAG not in (found.tags or {}):  # a kind the user chose stays
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name)


def copy_logged_model(model_uri: str, path: Path, tracking_uri: str) -> None:
    """Copy a logged model's folder out of the store, byte for byte (no second serialisation).

    Args:
        model_uri: The URI `log_model` returned (`models:/m-...`).
        path: A folder that must not exist yet.
        tracking_uri: The store it was logged to.
    """
    Path(path).mkdir(parents=True)
    # Held: a signal raised inside the store's SQLite read surfaces as SQLAlchemy's OperationalError, not as the
    # interruption it is (seen: SIGTERM while the export was staged ended in a traceback and exit 1).
    with interrupts.held():
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(path), tracking_uri=for_mlflow(tracking_uri))


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
        ModelLoadError: The folder has no `MLmodel` file, or loading in the block failed
            (crispml's own errors raised in the block pass unchanged).
    """
    if not is_model_uri(source) and not (Path(source) / "MLmodel").is_file():
        raise ModelLoadError(
            f"no model at {source}: the folder has no MLmodel file; pass a model folder "
            "(<out>/<experiment>/model) or a URI such as models:/<experiment>@champion"
        )
    point_mlflow_at(tracking_uri)
    try:
        yield
    except CrispmlError:
        raise
    except Exception as exc:  # MLflow raises many types for a missing model
        first = first_line(exc)
        raise ModelLoadError(
            f"cannot load the model {source} ({first[:200]}); check the path or URI and --tracking-uri"
        ) from None


FILES_TAG = "crispml.files_sha256"
"""The logged model's tag, in the tracking database, that holds `{file: SHA-256}` of its files as logged."""
_ADDED_ON_DOWNLOAD = "registered_model_meta"  # MLflow writes it into every models:/ download; the store has none


def record_model_files(client: Any, model_id: str, tracking_uri: str) -> dict[str, str]:
    """Record the SHA-256 of a logged model's files, as they are in the store, in a tag of the logged model.

    The hashes live in the tracking database, apart from the artifacts, so `load_model` and
    `scoring_app` can check a `models:/` or `runs:/` model's files before loading them.

    Args:
        client: An `MlflowClient` on the store.
        model_id: The logged model's id (`m-...`).
        tracking_uri: The store.

    Returns:
        `{relative path: SHA-256}`.
    """
    with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
        folder = _download(f"models:/{model_id}", Path(tmp), tracking_uri)
        files = _file_hashes(folder)
    client.set_logged_model_tags(model_id, {FILES_TAG: json.dumps(files, sort_keys=True)})
    return files


def _download(uri: str, into: Path, tracking_uri: str) -> Path:
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow draws a download progress bar
        with interrupts.held():  # as in copy_logged_model: a signal inside a store read must not become a store error
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into), tracking_uri=for_mlflow(tracking_uri)))


def _file_hashes(folder: Path) -> dict[str, str]:
    """`{file: SHA-256}` of a model folder, without Python's bytecode caches (`bytecode_caches`)."""
    return {
        p.relative_to(folder).as_posix(): sha256_of(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != _ADDED_ON_DOWNLOAD and not is_bytecode_cache(p.relative_to(folder))
    }


def _logged_model_id(client: Any, uri: str, depth: int = 0) -> str | None:
    """The logged model (`m-...`) a `models:/` or `runs:/` URI names, found in the tracking database.

    Returns None for a model logged without one (before MLflow 3), or a URI that names no logged model.
    """
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if uri.startswith("models:"):
        found = get_model_name_and_version(client, uri)
        if len(found) == 1:
            return str(found[0])
        version = client.get_model_version(*found)
        if getattr(version, "model_id", None):
            return str(version.model_id)
        source = str(version.source or "")
        return _logged_model_id(client, source, depth + 1) if depth < 2 and source.startswith(("models:", "runs:")) else None
    if not uri.startswith("runs:"):
        return None
    run_id, name = RunsArtifactRepository.parse_runs_uri(uri)
    if not name or "/" in name.strip("/"):
        return None
    experiment = client.get_run(run_id).info.experiment_id
    token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[experiment], filter_string=f"name = '{name.strip('/')}'", page_token=token
        )
        for logged in page:
            if logged.source_run_id == run_id:
                return str(logged.model_id)
        token = page.token
        if not token:
            return None


@contextmanager
def _checked_copy(source: str, tracking_uri: str) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """A local folder holding the model at `source`, checked against its recorded hashes; yields it and warnings.

    A folder is yielded as it is (`verify_export` checks it). A `models:/` or `runs:/` URI is
    resolved in the tracking database to its logged model, whose files are downloaded to a
    temporary folder and checked against the hashes `record_model_files` kept; the model
    is then loaded from that folder, so what is loaded is what was checked. A model with no
    recorded hashes (logged by another tool or an older crispml), or any other URI, is
    downloaded and loaded with a warning that it could not be checked.

    Raises:
        TrackingError: The store cannot be used.
        ModelLoadError: The store does not exist, or a file differs from what was logged.
    """
    if not is_model_uri(source):
        # A copy without bytecode caches: loading a model folder (plain `mlflow.pyfunc` does)
        # writes `code/__pycache__/`, which the checks skip, so crispml never runs one.
        with tempfile.TemporaryDirectory(prefix="crispml-model-") as tmp:
            copy = Path(tmp) / "model"
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
            yield copy, ()
        return
    in_store = source.startswith(("models:", "runs:"))
    if in_store:
        database = sqlite_file(tracking_uri)
        if database is not None and not database.exists():
            raise ModelLoadError(
                f"no MLflow store at {database} ({tracking_uri}) to look up {source} in; pass the store "
                "'crispml run' wrote to with --tracking-uri, or a model folder"
            )
        check_store(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="crispml-model-") as tmp:
        client = MlflowClient(for_mlflow(tracking_uri), registry_uri=for_mlflow(tracking_uri))
        model_id = _logged_model_id(client, source) if in_store else None
        recorded = None
        if model_id is not None:
            recorded = client.get_logged_model(model_id).tags.get(FILES_TAG)
        folder = _download(f"models:/{model_id}" if model_id else source, Path(tmp), tracking_uri)
        for cache in list(folder.rglob("__pycache__")):  # never run a bytecode cache (see `is_bytecode_cache`)
            shutil.rmtree(cache, ignore_errors=True)
        if recorded is None:
            why = "it has no file hashes recorded in the store (logged by another tool or an older crispml)" if in_store else "it is not in an MLflow store"
            warning = (
                f"{source} could not be checked before loading: {why}; to have its files checked, "
                "log it with 'crispml run' and load it by models:/<experiment>@champion"
            )
            yield folder, (warning,)
            return
        _check_files(folder, recorded, source if model_id in source else f"{source} (logged model {model_id})")
        yield folder, ()


def _check_files(folder: Path, recorded: str, label: str) -> None:
    """The downloaded files are exactly the ones recorded when the model was logged."""
    fix = "restore the model's files in the store, or log the model again with 'crispml run'"
    try:
        expected = json.loads(recorded)
    except json.JSONDecodeError:
        expected = None
    if not isinstance(expected, dict) or not expected:
        raise ModelLoadError(f"the file hashes recorded for {label} ({FILES_TAG}) are unreadable, so it is not loaded; {fix}")
    present = _file_hashes(folder)
    for name, digest in sorted(expected.items()):
        if name not in present:
            raise ModelLoadError(f"{label} is missing {name} in the store, which was there when it was logged, so it is not loaded; {fix}")
        if present[name] != digest:
            raise ModelLoadError(
                f"{name} of {label} does not match the SHA-256 recorded when it was logged: it changed in the store, "
                f"so it is not loaded; {fix}"
            )
    extra = sorted(set(present) - set(expected))
    if extra:
        raise ModelLoadError(
            f"{label} holds {', '.join(extra)} in the store, which was not there when it was logged, so it is not loaded; {fix}"
        )


def load_model(source: str, tracking_uri: str) -> LoadedModel:
    """Load a model by folder or URI (`models:/name@champion`, `models:/m-...`, `runs:/...`).

    A URI's files are first downloaded and checked against the hashes recorded in the
    tracking database when the model was logged (see `_checked_copy`); a folder is loaded
    as it is (check it first with `verify_export`).

    Args:
        source: A model folder written by crispml, or a model URI.
        tracking_uri: The store to resolve `models:/` and `runs:/` URIs against.

    Returns:
        The model, its data contract, and warnings: a model that could not be checked,
        package versions that differ.

    Raises:
        TrackingError: The store named for a `models:/` or `runs:/` URI cannot be used.
        ModelLoadError: Nothing loadable is there, a file in the store changed after the
            model was logged, or its data contract is malformed.
    """
    with _loading(source, tracking_uri), _checked_copy(source, tracking_uri) as (folder, unchecked):
        info = Model.load(str(folder))
        model = mlflow.sklearn.load_model(str(folder))
    contract = model_contract(info, source)
    return LoadedModel(
        model=model,
        contract=contract,
        warnings=(*unchecked, *version_warnings(info, source)),
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
        try:  # a JSON string since 2026-12 (a YAML tree before: still read)
            return DataContract.from_dict(json.loads(saved) if isinstance(saved, str) else saved)
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


def _signature(model: Any, input_example: pd.DataFrame, contract: Mapping[str, Any] | None) -> Any:
    """The outputs `predict` gives; no input schema for a model with a contract, which is its schema.

    MLflow's column types cannot say "an integer column, or floats once a value is missing":
    a signature refuses int64 rows for a double column and float64 rows for a long one, so
    `pd.read_csv` of a file like the training file would fail. The contract, enforced by the
    shipped loader (`stages.crispml_pyfunc`), takes both.
    """
    if contract is None:
        return infer_signature(input_example, model.predict(input_example))
    outputs = crispml_pyfunc.ContractModel(model, dict(contract)).predict(input_example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer *input* columns: there is no input schema
        return ModelSignature(inputs=None, outputs=infer_signature(outputs).inputs)


def _save_with_contract_loader(path: str, mlflow_model: Model, **kwargs: Any) -> None:
    """`mlflow.sklearn.save_model`, with the pyfunc flavor loaded by the shipped `crispml_pyfunc.py`.

    The sklearn flavor stays as it is (`mlflow.sklearn.load_model` gives the pipeline); the
    pyfunc one (`mlflow.pyfunc`, `mlflow models serve`) checks rows against the data contract
    and returns `prediction` and `proba_<class>`, as `crispml predict` does.
    """
    mlflow.sklearn.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
    mlflow_model.flavors["python_function"]["loader_module"] = PYFUNC_LOADER.stem
    mlflow_model.save(os.path.join(path, "MLmodel"))


_CONTRACT_FLAVOR = types.SimpleNamespace(__name__="mlflow.sklearn", save_model=_save_with_contract_loader)
PYFUNC_LOADER = Path(crispml_pyfunc.__file__)
"""The loader shipped in each model's `code/` folder (`stages/crispml_pyfunc.py`)."""


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
    found = _live_experiment(tracking_uri, name)
    return None if found is None else str(found.experiment_id)


def _live_experiment(tracking_uri: str, name: str) -> Any:
    found = MlflowClient(for_mlflow(tracking_uri)).get_experiment_by_name(name)
    return None if found is None or found.lifecycle_stage == "deleted" else found


@dataclass(frozen=True)
class ScoringApp:
    """MLflow's scoring server for one model, the model's data contract, and what to warn about.

    Attributes:
        app: The ASGI application (`/ping`, `/health`, `/version`, `/invocations`).
        contract: The data contract saved with the model (names and kinds from its
            signature only, for a model saved without one).
        warnings: A model that could not be checked before loading; package versions that differ.
        raw_rows: Its pyfunc is crispml's loader, which takes raw rows (models logged before it take cleaned ones).
    """

    app: Any
    contract: DataContract
    warnings: tuple[str, ...] = ()
    raw_rows: bool = False


def scoring_app(source: str, tracking_uri: str) -> ScoringApp:
    """Load a model as a pyfunc and build MLflow's scoring server for it (what `mlflow models serve` runs).

    A URI's files are checked against the hashes recorded when it was logged, as in `load_model`.

    Args:
        source: A model folder written by crispml, or a model URI (`models:/name@champion`).
        tracking_uri: The store to resolve `models:/` and `runs:/` URIs against.

    Returns:
        The server application, the model's data contract, and warnings.

    Raises:
        TrackingError: The store named for a `models:/` or `runs:/` URI cannot be used.
        ModelLoadError: Nothing loadable is there, a file in the store changed after the
            model was logged, or its data contract is malformed.
    """
    from mlflow.pyfunc import scoring_server

    with _loading(source, tracking_uri), _checked_copy(source, tracking_uri) as (folder, unchecked):
        model = mlflow.pyfunc.load_model(str(folder))  # the sklearn flavor holds the model in memory
    return ScoringApp(
        app=scoring_server.init(model),
        contract=model_contract(model.metadata, source),
        warnings=(*unchecked, *version_warnings(model.metadata, source)),
        raw_rows=model.metadata.flavors.get("python_function", {}).get("loader_module") == PYFUNC_LOADER.stem,
    )
