"""The tracking store: its URI, its health checked before any work, and bounded calls to it.

`check_store` answers, before a run trains anything, whether the store named by a tracking URI
can be used: a SQLite file that exists and is a store (or a folder where one can be made),
with a schema this MLflow can read, not locked, writable; or a server that answers within
`HTTP_LIMITS`. `for_mlflow` and `point_mlflow_at` hand MLflow the URI (relative SQLite paths
resolved against the working folder) and only it. Importing this module quiets MLflow's
loggers and bounds its HTTP calls, for every module that talks to MLflow.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import mlflow.sklearn
from mlflow import MlflowClient

from pipeline.errors import TrackingError, did_you_mean, first_line
from pipeline.tracking import schema

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
# MLflow warns about the `Any` in its own pyfunc type hints (`params: dict[str, Any]`) when it
# loads a model. crispml's quiet blocks hide MLflow's noise with `catch_warnings`, which is not
# thread-safe: on a busy machine this one landed on stderr under `--json`. A filter set once,
# when this module is imported, holds in every thread.
warnings.filterwarnings("ignore", message="Any type hint is inferred as AnyType", category=UserWarning)


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


def check_store(tracking_uri: str, timeout: float | None = None, writable: bool = False) -> None:
    """Fail early, before any training, when the tracking store cannot be used.

    Checks, in order: the URI's scheme; for a tracking server, that it accepts a connection
    and answers an HTTP request within `timeout`; for SQLite, that its folder can be
    created, and that an existing database is a file, an SQLite database, and not locked
    for more than `timeout`; with `writable`, that the folder can be written and the
    database can take a write (not read-only); then that MLflow can open and read the
    store, with MLflow's own logging silenced, so a failure prints crispml's one line only.
    With `writable`, a new SQLite store is created under a file lock, so two runs starting
    at once against a fresh `mlruns/` do not both create its tables; it is written from
    MLflow's schema kept as SQL (`pipeline.tracking.schema`) rather than by MLflow's migrations.

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
        if writable and database is not None and not (database.exists() or database.is_symlink()):
            schema.make_store(database)  # MLflow's schema in milliseconds, not its migrations in seconds
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
