"""Long-running servers: the MLflow UI for people, the model's REST endpoint for programs.

`crispml ui` runs MLflow's own tracking server (UI and REST API) as a child process,
lightly: one worker and no job runners. `crispml serve` runs MLflow's scoring server for a
saved model in this process, behind a gate that reads each request in whichever layout
MLflow accepts (`pipeline.payloads`) and checks its rows against the data contract saved
with the model first (`stages.contract.check_rows`, as batch scoring does), so that a
bad request gets a 4xx with one line naming the problem. Both bind 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline import payloads
from pipeline.errors import EXIT_OK, DataError, TrackingError, UsageError
from pipeline.exports import verify_export
from pipeline.tracking import loading, store
from stages.contract import DataContract, check_rows

HOST = "127.0.0.1"
UI_PORT = 5000
SERVE_PORT = 5001
READY_TIMEOUT = 60.0
"""Seconds to wait for the UI server to answer (it takes about 8 s on 2 cores)."""
STOP_TIMEOUT = 10.0
LIGHT_UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""No job runners: the UI starts in about 8 s with 0.5 GB instead of 27 s with 2.3 GB."""
INVOCATIONS = "/invocations"
MAX_REQUEST_MB = 100.0
"""The default limit on a scoring request's body (`crispml serve --max-request-mb`); MLflow's server has none."""
MAX_REQUEST_BYTES = int(MAX_REQUEST_MB * 1e6)
ERROR_CODES = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 500: "INTERNAL_ERROR"}
"""The `error_code` of the gate's answers, by HTTP status."""
_REPLACED_HEADERS = (b"content-type", b"content-length", b"content-encoding", b"transfer-encoding")

Announce = Callable[[str], None]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = logging.getLogger(__name__)


def bin_dir() -> Path:
    """The `bin/` folder of the running Python environment (where `mlflow` and `uvicorn` live).

    Returns:
        The folder holding `sys.executable`, not resolved, so a virtual environment's own
        folder is kept even when its `python` links to the system one.
    """
    return Path(sys.executable).parent


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child process: ours, with this environment's `bin/` first on PATH.

    MLflow starts some of its helpers by name, so a virtual environment that was not
    activated still needs its `bin/` on PATH.

    Args:
        extra: Variables to add or override.

    Returns:
        A new environment mapping.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir()), env.get("PATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def check_port(port: int, flag: str = "--port") -> None:
    """Fail early when a port cannot be used on 127.0.0.1.

    Args:
        port: The TCP port.
        flag: The option that set it, for the message.

    Raises:
        UsageError: The port is out of range or already in use.
    """
    if not 1 <= port <= 65535:
        raise UsageError(f"{flag} {port} is not a TCP port; pass a number from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so a port in TIME_WAIT counts as free, as for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise UsageError(f"port {port} on {HOST} {why}; stop what holds it or pass another {flag}") from None


def ui_command(tracking_uri: str, port: int) -> list[str]:
    """The `mlflow server` command line for the UI on a store.

    Args:
        tracking_uri: The store (`sqlite:///mlruns/mlflow.db` by default).
        port: The port on 127.0.0.1.

    Returns:
        The argument list.
    """
    command = [str(bin_dir() / "mlflow"), "server", "--backend-store-uri", tracking_uri]
    root = store.artifact_root(tracking_uri)
    if root is not None:  # new experiments made in the UI keep their artifacts beside the store
        command += ["--default-artifact-root", root]
    return command + ["--host", HOST, "--port", str(port), "--workers", "1"]


def runs_page(port: int, experiment_id: str | None) -> str:
    """The UI's address: an experiment's runs page, or the experiment list.

    The runs page opens newest first, each parent run with its candidates nested under it
    (MLflow's UI lists them flat once sorted by a metric); a parent's name carries the chosen
    model, its holdout score and the decision.

    Args:
        port: The UI's port on 127.0.0.1.
        experiment_id: The experiment, or None for the list of experiments.

    Returns:
        The URL.
    """
    base = f"http://{HOST}:{port}/"
    return f"{base}#/experiments/{experiment_id}/runs" if experiment_id else base


def run_ui(tracking_uri: str, experiment: str, port: int, announce: Announce, timeout: float = READY_TIMEOUT) -> int:
    """Start the MLflow UI on a store, say where to open it, and run until interrupted.

    Args:
        tracking_uri: The store `crispml run` wrote to.
        experiment: The experiment whose runs page to announce.
        port: The port on 127.0.0.1.
        announce: Called with the runs page's URL once the UI answers.
        timeout: Seconds to wait for it to answer.

    Returns:
        The exit code: 0 when the server stopped cleanly.

    Raises:
        UsageError: The URI is a tracking server (it serves its own UI), or the port is taken.
        TrackingError: The store does not exist or cannot be read, or the UI did not start.
        KeyboardInterrupt: On Ctrl-C, or on SIGTERM once the command line has turned it into
            `Interrupted`, after the server is stopped.
    """
    if urlparse(tracking_uri).scheme in ("http", "https"):
        raise UsageError(
            f"{tracking_uri} is a tracking server, which serves its own UI: open {tracking_uri} in a browser"
        )
    database = store.sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        raise TrackingError(
            f"no MLflow store at {database} ({tracking_uri}); run 'crispml run' first, "
            "or pass the store it wrote to with --tracking-uri"
        )
    check_port(port)
    store.check_store(tracking_uri)
    url = runs_page(port, store.experiment_id(tracking_uri, experiment))
    executable = bin_dir() / "mlflow"
    if not executable.is_file():
        raise TrackingError(f"no mlflow program at {executable}; reinstall crispml (pip install -e .)")
    # Same process group as this one: Ctrl-C in a terminal, or a signal to the group,
    # reaches the server too. `mlflow server` forwards SIGTERM and SIGINT to its worker.
    # Its messages go to stderr, so that stdout carries only the URL.
    process = subprocess.Popen(ui_command(tracking_uri, port), env=child_env(LIGHT_UI_ENV), stdout=2)
    try:
        wait_until_ready(f"http://{HOST}:{port}/health", process, timeout, "the MLflow UI")
        announce(url)
        code = process.wait()
        if code != 0:
            raise TrackingError(f"the MLflow UI server stopped with exit code {code}; see its messages above")
        return EXIT_OK
    finally:
        stop(process)


def serve_model(
    source: str,
    tracking_uri: str,
    port: int,
    announce: Announce,
    max_request_mb: float = MAX_REQUEST_MB,
    warn: Announce = lambda message: None,
) -> int:
    """Serve a model over MLflow's scoring protocol on 127.0.0.1 until interrupted.

    The server is MLflow's own (`mlflow models serve` runs the same application):
    `GET /ping`, and `POST /invocations` with CSV (`text/csv`), Parquet
    (`application/vnd.apache.parquet`) or JSON (`dataframe_split`, `dataframe_records`,
    `instances`, `inputs`). It runs in this process, so it needs nothing on PATH. A model
    folder is checked against the SHA-256 hashes in its `manifest.json` before anything in
    it is loaded, as for batch scoring, and every request is first read and checked
    against the data contract saved with the model (`ContractGate`).

    On Ctrl-C or SIGTERM, uvicorn finishes the requests in flight, then re-raises the signal
    under the handlers it found: the command line's, which turn it into `Interrupted`.

    Args:
        source: A model folder or URI (`models:/<experiment>@champion`).
        tracking_uri: The store for `models:/` and `runs:/` URIs.
        port: The port on 127.0.0.1.
        announce: Called with the endpoint's URL before the server starts.
        max_request_mb: The largest request body, in MB (10^6 bytes); a larger one gets a 413.
        warn: Called with each warning about the model (it could not be checked before loading,
            it was saved with other package versions) before the server starts.

    Returns:
        The exit code: 0 when the server stopped without a signal.

    Raises:
        UsageError: The port is taken, `max_request_mb` is not positive, or the server did not start.
        ModelLoadError: No loadable model at `source`, or a model folder that changed after export.
        KeyboardInterrupt: On Ctrl-C or SIGTERM, after the server has shut down.
    """
    import uvicorn

    if not 0 < max_request_mb < math.inf:
        raise UsageError(
            f"--max-request-mb {max_request_mb:g} is not a size; pass a number of MB above 0 (default {MAX_REQUEST_MB:g})"
        )
    check_port(port)
    if not loading.is_model_uri(source) and Path(source).is_dir():
        verify_export(Path(source))
    scoring = loading.scoring_app(source, tracking_uri)
    for message in scoring.warnings:
        warn(message)
    app = ContractGate(scoring.app, scoring.contract, max_bytes=int(max_request_mb * 1e6), raw_rows=scoring.raw_rows)
    announce(f"http://{HOST}:{port}{INVOCATIONS}")
    server = uvicorn.Server(
        uvicorn.Config(app, host=HOST, port=port, log_level="info", timeout_graceful_shutdown=STOP_TIMEOUT)
    )
    try:
        server.run()  # not uvicorn.run(), which swallows the interrupt re-raised after shutdown
    except SystemExit:  # uvicorn's startup failure, logged above: most likely the port was taken since the check
        raise UsageError(
            f"the model server did not start on {HOST}:{port} (see the error above); "
            "stop what holds the port or pass another --port"
        ) from None
    return EXIT_OK


def wait_until_ready(url: str, process: subprocess.Popen[Any], timeout: float, what: str) -> None:
    """Poll a URL until it answers 200, the process dies, or time runs out.

    Args:
        url: A health-check URL.
        process: The server process.
        timeout: Seconds to wait.
        what: The server's name, for messages.

    Raises:
        TrackingError: The process exited first, or the URL did not answer in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise TrackingError(f"{what} exited with code {code} before it answered at {url}; see its messages above")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TrackingError(f"{what} did not answer at {url} within {timeout:.0f} s; see its messages above")


def stop(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it is still running after `timeout`.

    Args:
        process: The child.
        timeout: Seconds to wait after SIGTERM.
    """
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ContractGate:
    """ASGI middleware: reads each `/invocations` request and checks it against the model's data contract.

    Every request MLflow's scoring server accepts (CSV, Parquet, or JSON in the
    `dataframe_split`, `dataframe_records`, `instances` or `inputs` layout) is read into
    its rows by `pipeline.payloads`, and those rows meet batch scoring's check
    (`contract.check_rows`): a request that is not a table of named columns gets a 400
    (415 for a content type the server does not read, 413 for a body over `max_bytes`), and
    rows that break the contract get a 400 with its message, each as
    `{"error_code": ..., "message": ...}` with a one-line message (a bug in crispml gets a
    500 in that form, its traceback going to the server's log). The check's drift warnings
    go to stderr, not into the response. MLflow's scoring server then gets the rows that were checked, as
    `dataframe_split` JSON with the request's `params`: for a model whose contract holds a
    cleaning plan, the cleaned rows (missing markers, spaces, numbers, dates read as
    training read its file), which its signature describes; otherwise the input columns as
    sent (a CSV or Parquet body goes on as it is, for MLflow to read with the signature's types).

    Args:
        app: The ASGI application to protect.
        contract: The model's data contract.
        max_bytes: The largest request body read; a larger one is drained and answered 413.
        raw_rows: The model is loaded by crispml's pyfunc loader (`pipeline.tracking.crispml_pyfunc`),
            which reads raw rows itself: the checked rows go on as sent (every layout as
            `dataframe_split`), and it answers `prediction` and `proba_<class>` per row.
    """

    def __init__(
        self, app: Any, contract: DataContract, max_bytes: int = MAX_REQUEST_BYTES, raw_rows: bool = False
    ) -> None:
        self.app = app
        self.contract = contract
        self.max_bytes = max_bytes
        self.raw_rows = raw_rows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != INVOCATIONS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        try:
            body = await _read_body(receive, self.max_bytes)
            if body is None:  # the client went away
                return
            # Reading a large table takes a while: off the event loop, so /ping still answers.
            body, content_type = await asyncio.to_thread(self._checked, body, headers)
        except DataError as exc:
            status = exc.status if isinstance(exc, payloads.RequestError) else 400
            await _send_json(send, status, {"error_code": ERROR_CODES[status], "message": str(exc)})
            return
        except Exception as exc:  # a bug in crispml: a one-line answer, and the traceback in the server's log
            _log.exception("crispml: internal error while reading a request")
            message = f"crispml could not read this request ({type(exc).__name__}); this is a bug in crispml, please report it"
            await _send_json(send, 500, {"error_code": ERROR_CODES[500], "message": message})
            return
        kept = [(k, v) for k, v in scope.get("headers") or [] if k.lower() not in _REPLACED_HEADERS]
        length = str(len(body)).encode("ascii")
        scope = {**scope, "headers": [*kept, (b"content-type", content_type.encode("ascii")), (b"content-length", length)]}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _checked(self, body: bytes, headers: dict[bytes, str]) -> tuple[bytes, str]:
        """The body and content type to send on, once the rows have passed the contract's check."""
        request = payloads.read_request(
            body, headers.get(b"content-type"), self.contract, content_encoding=headers.get(b"content-encoding")
        )
        check = check_rows(request.frame, self.contract, what="the request")
        for warning in check.warnings:
            _log.warning("crispml: warning: %s", warning)
        if self.raw_rows:  # crispml's pyfunc loader reads raw rows as `crispml predict` does: the input columns as sent
            return payloads.split_body(request.frame.loc[:, list(self.contract.inputs)], request.params), payloads.JSON
        if self.contract.cleaning is not None:
            return payloads.split_body(check.features, request.params), payloads.JSON
        if request.mime == payloads.JSON:  # as dataframe_split, whatever the layout: MLflow scores the rows checked
            return payloads.split_body(request.frame.loc[:, list(self.contract.inputs)], request.params), payloads.JSON
        return payloads.without_bom(body), request.mime


async def _read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The request body, or None if the client disconnected first.

    A body over `max_bytes` is read to its end without being kept (so the client, still
    sending, gets the answer rather than a reset connection), then refused.

    Raises:
        RequestError: (413) The body is larger than `max_bytes`.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
        else:
            chunks.clear()
        if not message.get("more_body", False):
            break
    if size > max_bytes:
        raise payloads.RequestError(
            f"the request body ({size:,} bytes) is over the server's limit of {max_bytes / 1e6:g} MB; "
            "send fewer rows per request, or restart crispml serve with a larger --max-request-mb",
            413,
        )
    return b"".join(chunks)


async def _send_json(send: Send, status: int, payload: dict[str, str]) -> None:
    body = json.dumps(payload).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
