"""Hostile stores and servers (issue 15): a registry model edited in the store, an edited manifest, a tracking server
that is silent or gone, and SQLite stores that are folders, not SQLite, another program's, read-only or of another
MLflow's schema: each is refused in one line, in bounded time, with nothing written."""

from __future__ import annotations

import atexit
import functools
import http.server
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from pipeline import cli, files
from pipeline.errors import EXIT_BUG, EXIT_OK, EXIT_USAGE, ModelLoadError
from pipeline.exports import MANIFEST, MANIFEST_SEAL, sealed_manifest, verify_export
from pipeline.runner import run
from pipeline.tracking import loading, store
from pipeline.tracking import runs as tracking

from conftest import REPO, config_for, sqlite_uri
from hostile import RUN, Hostile, both, csv, labelled, raw, run_case
from servers_util import CRISPML, HOST, clean_env, free_port, running

DATA = csv("d.csv", labelled())
SCORE = csv("s.csv", labelled())
TRAIN = (*RUN, "--data", "d.csv", "--target", "label")
CHAMPION = "models:/x@champion"
PREDICT = ("predict", "--model", CHAMPION, "--data", "s.csv", "--out", "scored.csv")
NOTHING = ()
"""A refused store check writes nothing: not the store, not a lock file beside it, not an export."""
LOCK = ("mlruns/.mlflow.db.lock",)
"""All a refused `run` may leave: the lock file it takes beside an existing store before MLflow opens it."""


# --- unusable SQLite stores: one line, at once, nothing written ------------------------------------------


@functools.cache
def _fresh_store() -> Path:
    """An empty MLflow SQLite store made once (creating its tables takes seconds), copied by the cases."""
    folder = Path(tempfile.mkdtemp(prefix="crispml-template-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    store.check_store(sqlite_uri(folder), writable=True)
    return folder / "mlflow.db"


def _older_revision() -> str:
    """A schema revision of MLflow's before its current one."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
    return str(script.get_revision(script.get_current_head()).down_revision)


def store_at(revision: str | None) -> object:
    """Put an empty MLflow store at `mlruns/mlflow.db`, its schema revision set to `revision` if given
    ('older': the one before MLflow's current one)."""

    def setup(work: Path) -> None:
        (work / "mlruns").mkdir()
        shutil.copy(_fresh_store(), work / "mlruns" / "mlflow.db")
        if revision is None:
            return
        with sqlite3.connect(work / "mlruns" / "mlflow.db") as connection:
            connection.execute("UPDATE alembic_version SET version_num = ?", (_older_revision() if revision == "older" else revision,))
        connection.close()

    return setup


def another_programs_database(work: Path) -> None:
    (work / "mlruns").mkdir()
    with sqlite3.connect(work / "mlruns" / "mlflow.db") as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    connection.close()


FOLDER_STORE = lambda work: (work / "mlruns" / "mlflow.db").mkdir(parents=True)
TEXT_STORE = raw("mlruns/mlflow.db", "this is not a database\n")
NEWER = ("written by a newer MLflow than the installed", "pip install -U mlflow")
OLDER = ("has the schema of an older MLflow", "mlflow db upgrade sqlite:///mlruns/mlflow.db")
SERVE = ("serve", "--model", CHAMPION, "--port", str(free_port()))

CASES = [
    Hostile("run: the store's path is a folder", TRAIN, ("mlruns/mlflow.db", "is a folder, not a database file", "sqlite:///mlruns/mlflow.db/mlflow.db"), both(DATA, FOLDER_STORE), may_write=NOTHING),
    Hostile("predict: the store's path is a folder", PREDICT, ("is a folder, not a database file",), both(SCORE, FOLDER_STORE), may_write=NOTHING),
    Hostile("serve: the store's path is a folder", SERVE, ("is a folder, not a database file",), FOLDER_STORE, may_write=NOTHING),
    Hostile("run: the store is a text file", TRAIN, ("mlruns/mlflow.db", "is not an SQLite database"), both(DATA, TEXT_STORE), may_write=NOTHING),
    Hostile("predict: the store is a text file", PREDICT, ("is not an SQLite database",), both(SCORE, TEXT_STORE), may_write=NOTHING),
    Hostile("ui: the store is a text file", ("ui", "--port", str(free_port())), ("is not an SQLite database",), TEXT_STORE, may_write=NOTHING),
    Hostile("run: another program's SQLite database", TRAIN, ("is an SQLite database but not an MLflow store", "invoices"), both(DATA, another_programs_database), may_write=NOTHING),
    Hostile("predict: another program's SQLite database", PREDICT, ("not an MLflow store",), both(SCORE, another_programs_database), may_write=NOTHING),
    Hostile("run: a store of a newer MLflow", TRAIN, NEWER, both(DATA, store_at("ffffffffffff")), may_write=LOCK),
    Hostile("predict: a store of a newer MLflow", PREDICT, NEWER, both(SCORE, store_at("ffffffffffff")), may_write=NOTHING),
    Hostile("ui: a store of a newer MLflow", ("ui", "--port", str(free_port())), NEWER, store_at("ffffffffffff"), may_write=NOTHING),
    Hostile("run: a store of an older MLflow", TRAIN, OLDER, both(DATA, store_at("older")), may_write=LOCK),
    Hostile("predict: a store of an older MLflow", PREDICT, OLDER, both(SCORE, store_at("older")), may_write=NOTHING),
    Hostile("predict: models:/ and no store at all", PREDICT, ("no MLflow store at mlruns/mlflow.db", "--tracking-uri"), SCORE, may_write=NOTHING),
    Hostile("serve: models:/ and no store at all", SERVE, ("no MLflow store at mlruns/mlflow.db",), may_write=NOTHING),
    Hostile("predict: a tracking server that refuses connections", (*PREDICT, "--tracking-uri", "http://127.0.0.1:9"), ("cannot reach the MLflow tracking server at http://127.0.0.1:9", "--tracking-uri"), SCORE, may_write=NOTHING),
    Hostile("run: a tracking server that refuses connections", (*TRAIN, "--tracking-uri", "http://127.0.0.1:9"), ("cannot reach the MLflow tracking server at http://127.0.0.1:9",), DATA, may_write=NOTHING),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_store(case, tmp_path, capsys, monkeypatch):
    start = time.monotonic()
    run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)
    assert time.monotonic() - start < 60  # MLflow alone retries an unopenable store for about 100 s


def _immutable(path: Path):
    """Make a file read-only even for root (chattr +i), or skip; returns the undo."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("running as root and chattr +i is not available here")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_store_file_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    undo = []
    immutable = lambda work: undo.append(_immutable(work / "mlruns" / "mlflow.db"))
    words = ("cannot write to the tracking database mlruns/mlflow.db", "readonly", "writable")
    try:
        run_case(Hostile("read-only", TRAIN, words, both(DATA, store_at(None), immutable), may_write=LOCK), tmp_path, None, cli.main, capsys, monkeypatch)
    finally:
        for step in undo:
            step()


# --- tracking servers that never answer: bounded, one line -------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.create_server((HOST, 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        server.close()


@pytest.fixture
def stuck_api_server() -> Iterator[str]:
    """An HTTP server whose `/health` answers at once and whose MLflow API never answers."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                return
            release.wait(120)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("command", ["run", "predict", "serve"])
def test_a_silent_tracking_server_fails_in_one_line_within_the_timeout(silent_server, command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    args = {"run": TRAIN, "predict": PREDICT, "serve": SERVE}[command]
    words = (f"the MLflow tracking server at {silent_server} accepted a connection but did not answer within 1 s", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    start = time.monotonic()
    run_case(Hostile(command, (*args, "--tracking-uri", silent_server), words, both(DATA, SCORE), may_write=NOTHING), tmp_path, None, cli.main, capsys, monkeypatch)
    assert time.monotonic() - start < 60  # MLflow's defaults alone: 120 s per attempt, 7 retries


@pytest.mark.parametrize("command", ["run", "predict"])
def test_a_server_whose_api_never_answers_fails_in_one_line_within_the_limits(stuck_api_server, command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # retries and backoff stay crispml's defaults
    args = {"run": TRAIN, "predict": PREDICT}[command]
    start = time.monotonic()
    run_case(Hostile(command, (*args, "--tracking-uri", stuck_api_server), (f"the MLflow tracking server at {stuck_api_server} accepted a connection but did not answer an API request within 1 s", "MLFLOW_HTTP_REQUEST_TIMEOUT higher"), both(DATA, SCORE), may_write=NOTHING), tmp_path, None, cli.main, capsys, monkeypatch)
    assert time.monotonic() - start < 60


def test_crispml_bounds_mlflow_http_calls_and_keeps_the_users_own_bounds():
    probe = (
        "import pipeline.tracking.store; from mlflow import environment_variables as e; "
        "print(e.MLFLOW_HTTP_REQUEST_TIMEOUT.get(), e.MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), e.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get())"
    )
    env = {k: v for k, v in clean_env().items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    done = subprocess.run([sys.executable, "-c", probe], check=False, env={**env, "MLFLOW_HTTP_REQUEST_TIMEOUT": "7"}, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    limits = store.HTTP_LIMITS
    assert done.stdout.split() == ["7", limits["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], limits["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]]
    assert int(limits["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 60 and int(limits["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3


def test_a_timeout_that_is_not_whole_seconds_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "soon")
    words = ("MLFLOW_HTTP_REQUEST_TIMEOUT='soon' is not a positive whole number of seconds", "unset it")
    run_case(Hostile("bad timeout", (*PREDICT, "--tracking-uri", "http://127.0.0.1:9"), words, SCORE, may_write=NOTHING), tmp_path, None, cli.main, capsys, monkeypatch)


# --- a registry model whose files were edited in the store -------------------------------------------------


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One real run registered as `x@champion` and exported: its store, ids, files in the store, and export."""
    tmp = tmp_path_factory.mktemp("store")
    labelled().to_csv(tmp / "d.csv", index=False)
    config = config_for(
        tmp, tmp / "d.csv",
        **{"business.target": "label", "tracking.experiment": "x", "modeling.models": ["baseline", "linear"], "modeling.folds": 3, "modeling.n_jobs": 1},
    )
    result = run(config)
    client = MlflowClient(config.tracking_uri, registry_uri=config.tracking_uri)
    model_id = result.model_uri.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    return {
        "uri": config.tracking_uri,
        "client": client,
        "run_id": result.run_id,
        "model_id": model_id,
        "files": Path(urlparse(location).path),
        "export": result.export_dir,
    }


def _uri(logged: dict[str, object], kind: str) -> str:
    return {
        "alias": CHAMPION,
        "version": "models:/x/1",
        "run": f"runs:/{logged['run_id']}/model",
        "logged model": f"models:/{logged['model_id']}",
    }[kind]


@contextmanager
def edited(folder: Path, how: str) -> Iterator[None]:
    """Edit the logged model's files in the store the way `how` says; put them back afterwards."""
    saved = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    try:
        if how == "model.skops changed":
            (folder / "model.skops").write_bytes(saved[folder / "model.skops"] + b"\0")
        elif how == "MLmodel edited":
            text = (folder / "MLmodel").read_text()
            (folder / "MLmodel").write_text(text.replace("skops_trusted_types:", "skops_trusted_types:\n  - builtins.eval", 1))
        elif how == "requirements.txt removed":
            (folder / "requirements.txt").unlink()
        else:
            (folder / "sitecustomize.py").write_text("print('hello')\n")
        yield
    finally:
        for path in [p for p in folder.rglob("*") if p.is_file() and p not in saved]:
            path.unlink()
        for path, content in saved.items():
            path.write_bytes(content)


TAMPERS = {
    "model.skops changed": "model.skops of {label} does not match the SHA-256 recorded when it was logged",
    "MLmodel edited": "MLmodel of {label} does not match the SHA-256 recorded when it was logged",
    "requirements.txt removed": "{label} is missing requirements.txt in the store",
    "file added": "{label} holds sitecustomize.py in the store, which was not there when it was logged",
}


def test_the_hashes_recorded_at_logging_are_those_of_the_files_in_the_store(logged):
    recorded = json.loads(logged["client"].get_logged_model(logged["model_id"]).tags[loading.FILES_TAG])
    folder = logged["files"]
    assert {"MLmodel", "model.skops", "requirements.txt"} <= set(recorded)
    assert recorded == {p.relative_to(folder).as_posix(): files.sha256_of(p) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", ["alias", "version", "run", "logged model"])
def test_a_registry_model_scores_when_its_files_are_as_logged(logged, kind, tmp_path, capsys, monkeypatch):
    SCORE(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["predict", "--model", _uri(logged, kind), "--data", "s.csv", "--out", "scored.csv", "--tracking-uri", logged["uri"]])
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert "could not be checked" not in err and "Traceback" not in err
    assert len(pd.read_csv(tmp_path / "scored.csv")) == len(labelled())


@pytest.mark.parametrize(
    "kind,how", [("alias", how) for how in TAMPERS] + [(kind, "model.skops changed") for kind in ("version", "run", "logged model")]
)
def test_predict_refuses_a_registry_model_whose_files_changed_in_the_store(logged, kind, how, tmp_path, capsys, monkeypatch):
    source = _uri(logged, kind)
    label = source if kind == "logged model" else f"{source} (logged model {logged['model_id']})"
    args = ("predict", "--model", source, "--data", "s.csv", "--out", "scored.csv", "--tracking-uri", logged["uri"])
    with edited(logged["files"], how):
        run_case(Hostile(how, args, (TAMPERS[how].format(label=label), "log the model again"), SCORE, may_write=NOTHING), tmp_path, None, cli.main, capsys, monkeypatch)


def test_serve_refuses_a_registry_model_whose_files_changed_in_the_store(logged, tmp_path, capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: pytest.fail("the server started on a model edited in the store"))
    args = ("serve", "--model", CHAMPION, "--port", str(free_port()), "--tracking-uri", logged["uri"])
    words = (TAMPERS["model.skops changed"].format(label=f"{CHAMPION} (logged model {logged['model_id']})"),)
    with edited(logged["files"], "model.skops changed"):
        run_case(Hostile("serve", args, words, may_write=NOTHING), tmp_path, None, cli.main, capsys, monkeypatch)


def test_a_model_edited_in_the_store_is_refused_before_any_of_it_is_read(logged, monkeypatch):
    """The check runs on the downloaded files before MLflow parses even the MLmodel file."""
    parsed = []
    monkeypatch.setattr(tracking.Model, "load", lambda *a, **k: parsed.append(a) or pytest.fail("MLmodel was parsed"))
    with edited(logged["files"], "MLmodel edited"), pytest.raises(ModelLoadError, match="MLmodel of models:/x@champion"):
        loading.load_model(CHAMPION, logged["uri"])
    assert not parsed


def test_a_registry_model_without_recorded_hashes_loads_with_a_warning(logged, tmp_path, capsys, monkeypatch):
    client, model_id = logged["client"], logged["model_id"]
    recorded = client.get_logged_model(model_id).tags[loading.FILES_TAG]
    client.delete_logged_model_tag(model_id, loading.FILES_TAG)  # as a model logged by another tool
    try:
        SCORE(tmp_path)
        monkeypatch.chdir(tmp_path)
        code = cli.main(["predict", "--model", CHAMPION, "--data", "s.csv", "--out", "scored.csv", "--tracking-uri", logged["uri"]])
    finally:
        client.set_logged_model_tags(model_id, {loading.FILES_TAG: recorded})
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert f"crispml: warning: {CHAMPION} could not be checked before loading: it has no file hashes recorded" in err


@pytest.mark.slow
def test_serve_scores_a_checked_registry_model(logged, tmp_path):
    """`serve` loads from the checked copy, which is gone once loaded: the server must not need it."""
    port = free_port()
    command = [CRISPML, "serve", "--model", CHAMPION, "--port", str(port), "--tracking-uri", logged["uri"]]
    with running(command, tmp_path / "logs", "serve", cwd=tmp_path, env=clean_env()) as server:
        assert server.first_line() == f"http://{HOST}:{port}/invocations"
        server.wait_http(f"http://{HOST}:{port}/ping")
        rows = labelled().drop(columns="label").head(5)
        answer = requests.post(server.first_line(), data=rows.to_csv(index=False), headers={"Content-Type": "text/csv"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 5
    assert "could not be checked" not in server.log()


# --- the exported manifest, covered as a whole --------------------------------------------------------------


def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


MANIFEST_EDITS = {
    "the seed": (lambda m: m.update(seed=m["seed"] + 1), "does not match its manifest_sha256: a field of it was edited after export"),
    "the data's hash": (lambda m: m["data"].update(sha256="0" * 64), "does not match its manifest_sha256"),
    "the decision": (lambda m: m["decision"].update(decision="no-go"), "does not match its manifest_sha256"),
    "a new field": (lambda m: m.update(approved_by="me"), "does not match its manifest_sha256"),
    "the seal itself": (lambda m: m.pop(MANIFEST_SEAL), "has no manifest_sha256, so its fields cannot be checked"),
}


@pytest.mark.parametrize("what", MANIFEST_EDITS)
def test_predict_refuses_an_export_whose_manifest_was_edited(logged, what, tmp_path, capsys, monkeypatch):
    change, words = MANIFEST_EDITS[what]

    def setup(work: Path) -> None:
        shutil.copytree(logged["export"], work / "model")
        _edit_manifest(work / "model", change)
        SCORE(work)

    case = Hostile(what, ("predict", "--model", "model", "--data", "s.csv", "--out", "scored.csv"), (f"model/{MANIFEST} {words}" if what != "the seal itself" else words, "re-export the model"), setup, may_write=NOTHING)
    run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)


def test_a_manifest_rewritten_with_other_spacing_and_key_order_still_verifies(logged, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(logged["export"], folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps(dict(reversed(list(manifest.items()))), indent=4, sort_keys=False))
    assert verify_export(folder) == manifest


def test_the_seal_covers_every_field_but_itself_and_a_reseal_replaces_it():
    manifest = {"seed": 7, "files": {"MLmodel": "ab" * 32}, "path": Path("/x")}
    sealed = json.loads(sealed_manifest(manifest))
    assert sealed["path"] == "/x" and sealed[MANIFEST_SEAL] == json.loads(sealed_manifest(sealed))[MANIFEST_SEAL]
    assert json.loads(sealed_manifest({**manifest, "seed": 8}))[MANIFEST_SEAL] != sealed[MANIFEST_SEAL]


# --- a server that stops answering after the checks; warnings of a served model ---------------------


@pytest.mark.parametrize(
    "failure",
    [
        mlflow.exceptions.MlflowException(
            "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception "
            "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded"
        ),
        RuntimeError("logging failed"),  # caused by a connection error, as MLflow's wrappers chain them
    ],
    ids=["mlflow-api-request-failed", "chained-connection-error"],
)
def test_a_server_that_stops_answering_mid_command_is_one_line(failure, monkeypatch, capsys):
    if isinstance(failure, RuntimeError):
        failure.__cause__ = requests.exceptions.ConnectionError("Connection refused")

    def dies(args):
        raise failure

    monkeypatch.setattr(cli, "_run", dies)
    code = cli.main(["run"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and "the MLflow tracking server stopped answering" in err


def test_a_bug_is_still_a_traceback_not_a_lost_server(monkeypatch, capsys):
    def bug(args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "_run", bug)
    assert cli.main(["run"]) == EXIT_BUG
    assert "Traceback" in capsys.readouterr().err


def test_serve_prints_the_warnings_about_its_model_before_it_starts(monkeypatch, capsys):
    import uvicorn

    from stages.contract import contract_from_signature

    warned = "the model could not be checked before loading: it has no recorded file hashes"
    monkeypatch.setattr(
        loading, "scoring_app", lambda source, uri: loading.ScoringApp(app=None, contract=contract_from_signature(("x",), ("x",)), warnings=(warned,))
    )
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)
    code = cli.main(["serve", "--model", "models:/m@champion", "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code == 0 and f"crispml: warning: {warned}" in err


# --- a relative store in a process that changes folder ----------------------------------------------


def test_for_mlflow_makes_only_a_relative_sqlite_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.for_mlflow("sqlite:///mlruns/mlflow.db") == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert store.for_mlflow("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert store.for_mlflow("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


@pytest.mark.slow
def test_a_relative_store_follows_the_working_folder_within_one_process(tmp_path, monkeypatch, capsys):
    # MLflow caches stores by URI: without crispml's absolute URI the second run would log into the first folder's store.
    for name in ("one", "two"):
        work = tmp_path / name
        work.mkdir()
        labelled().to_csv(work / "t.csv", index=False)
        monkeypatch.chdir(work)
        assert cli.main([*RUN, "--data", "t.csv", "--target", "label"]) == EXIT_OK, capsys.readouterr().err
    for name in ("one", "two"):
        client = MlflowClient(f"sqlite:///{tmp_path / name / 'mlruns' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("t")
        parents = client.search_runs([experiment.experiment_id], filter_string="tags.`crispml.candidate` IS NULL")
        assert len(parents) == 1, name
