"""`crispml serve` over REST, `crispml ui`'s errors, both servers on SIGTERM, and `crispml run` against a tracking server.

Every server here is a real process on 127.0.0.1, started on a free port and stopped by its
process group id when its test or module ends, pass or fail.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.exports import verify_export
from pipeline.settings import DEFAULT_DATA

from servers_util import CRISPML, HOST, LIGHT_SERVER, MLFLOW, PLAIN_PATH, Server, clean_env, free_port, running

pytestmark = pytest.mark.slow

FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]


@pytest.fixture(scope="module")
def serving(penguins_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`crispml serve` on the exported penguins model, started with a PATH that lacks the venv's bin/."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    command = [CRISPML, "serve", "--model", penguins_run.result.export_dir, "--port", str(port)]
    with running(command, tmp / "logs", "serve", cwd=tmp, env=clean_env(PATH=PLAIN_PATH)) as server:
        assert server.first_line() == f"http://{HOST}:{port}/invocations"
        server.wait_http(f"http://{HOST}:{port}/ping")
        yield server


@pytest.fixture(scope="module")
def served(serving: Server) -> str:
    """The scoring URL of `crispml serve`."""
    return serving.first_line()


@pytest.fixture(scope="module")
def batch(penguins_run, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """`crispml predict` on the whole penguins file (344 rows, some with gaps)."""
    tmp = tmp_path_factory.mktemp("batch")
    out = tmp / "scored.csv"
    model = penguins_run.result.export_dir
    done = subprocess.run(
        [CRISPML, "predict", "--model", model, "--data", DEFAULT_DATA, "--out", out],
        cwd=tmp, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return pd.read_csv(out)


def _csv(frame: pd.DataFrame) -> tuple[bytes, str]:
    return frame.to_csv(index=False).encode("utf-8"), "text/csv"


def _split(frame: pd.DataFrame) -> tuple[bytes, str]:
    split = json.loads(frame.to_json(orient="split", index=False))
    return json.dumps({"dataframe_split": split}).encode("utf-8"), "application/json"


def _records(frame: pd.DataFrame) -> tuple[bytes, str]:
    records = json.loads(frame.to_json(orient="records"))
    return json.dumps({"dataframe_records": records}).encode("utf-8"), "application/json"


PAYLOADS = {"csv": _csv, "dataframe_split": _split, "dataframe_records": _records}


def _post(url: str, frame: pd.DataFrame, fmt: str) -> requests.Response:
    body, content_type = PAYLOADS[fmt](frame)
    return requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=60)


def test_ping(served: str) -> None:
    response = requests.get(served.replace("/invocations", "/ping"), timeout=10)
    assert response.status_code == 200


@pytest.mark.parametrize("fmt", list(PAYLOADS))
def test_rest_predictions_equal_batch_predictions(served: str, batch: pd.DataFrame, fmt: str) -> None:
    # The whole file as a user has it: integer `year`, gaps in numeric and text columns,
    # and the target column, which the model does not use.
    data = pd.read_csv(DEFAULT_DATA)
    assert data["year"].dtype == "int64" and data[FEATURES].isna().any().any()
    response = _post(served, data, fmt)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(batch) == 344
    outputs = ["prediction", *(c for c in batch.columns if c.startswith("proba_"))]
    assert len(outputs) == 4 and predictions == batch[outputs].to_dict(orient="records")  # the same columns and values


@pytest.mark.parametrize(
    ("fmt", "column"),
    [("csv", "bill_length_mm"), ("dataframe_split", "island"), ("dataframe_records", "year"), ("csv", "sex")],
)
def test_a_missing_column_is_a_400_naming_it(served: str, fmt: str, column: str) -> None:
    rows = pd.read_csv(DEFAULT_DATA).head(5).drop(columns=["species", column])
    response = _post(served, rows, fmt)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith(f"the request lacks 1 column(s) the model needs: {column};"), message


@pytest.mark.parametrize("fmt", list(PAYLOADS))
def test_text_in_a_numeric_column_is_a_400_naming_it(served: str, fmt: str) -> None:
    rows = pd.read_csv(DEFAULT_DATA).head(5).astype({"body_mass_g": object})
    rows.loc[2, "body_mass_g"] = "heavy"
    response = _post(served, rows, fmt)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "BAD_REQUEST"
    message = response.json()["message"]
    assert "column 'body_mass_g' must be numeric" in message and "'heavy'" in message and "row 3" in message, message


def test_drift_is_logged_not_returned(serving: Server, served: str) -> None:
    rows = pd.read_csv(DEFAULT_DATA).head(3)
    rows.loc[0, "island"] = "Atlantis"
    response = _post(served, rows, "dataframe_records")
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["predictions"] and len(response.json()["predictions"]) == 3
    warning = "crispml: warning: drift: column 'island' has 1 of 3 rows with a category not seen in training"
    assert warning in serving.stderr.read_text(), serving.log()


def test_an_infinite_value_is_a_400_naming_its_column(served: str) -> None:
    rows = pd.read_csv(DEFAULT_DATA).head(5)
    rows.loc[1, "flipper_length_mm"] = float("inf")
    response = _post(served, rows, "csv")
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "column 'flipper_length_mm'" in message and "infinite" in message and "row 2" in message, message


def test_a_malformed_request_is_a_4xx_not_a_500(served: str) -> None:
    for body, content_type in [(b"{not json", "application/json"), (b"", "text/csv"), (b"a,b", "text/plain")]:
        response = requests.post(served, data=body, headers={"Content-Type": content_type}, timeout=30)
        assert 400 <= response.status_code < 500, (content_type, response.status_code, response.text)


def test_serve_without_a_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tmp_path / "nothing"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"crispml: error: no model at {tmp_path / 'nothing'}: the folder has no MLmodel file")


def test_serve_on_a_tampered_model_folder_exits_2(
    penguins_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(penguins_run.result.export_dir, folder)
    (folder / "model.joblib").write_bytes(b"not the exported pickle")
    assert main(["serve", "--model", str(folder), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"crispml: error: {folder / 'model.joblib'} does not match the SHA-256 in manifest.json"), err


def _processes() -> dict[int, tuple[int, str]]:
    """`{pid: (parent pid, state)}` of every process, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue  # gone while we looked
        found[int(stat.parent.name)] = (int(ppid), state)
    return found


def _descendants(pid: int) -> set[int]:
    processes = _processes()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in processes.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    process = _processes().get(pid)
    return process is not None and process[1] != "Z"


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_sigterm_exits_143_and_leaves_no_server(penguins_run, tmp_path: Path, command: str) -> None:
    port = free_port()
    args, health = {
        "ui": (["ui", "--tracking-uri", penguins_run.tracking_uri, "--experiment", penguins_run.result.experiment], "health"),
        "serve": (["serve", "--model", penguins_run.result.export_dir], "ping"),
    }[command]
    with running([CRISPML, *args, "--port", str(port)], tmp_path / "logs", command, cwd=tmp_path, env=clean_env()) as server:
        server.first_line()
        server.wait_http(f"http://{HOST}:{port}/{health}")
        children = _descendants(server.process.pid)
        if command == "ui":  # MLflow's server and its worker; `serve` runs in crispml's own process
            assert len(children) >= 2, children
        os.kill(server.process.pid, signal.SIGTERM)  # crispml alone, not its group: it must stop its child itself
        assert server.process.wait(timeout=30) == 143, server.log()
        last = server.stderr.read_text().strip().splitlines()[-1]
        assert last.startswith("crispml: interrupted by SIGTERM"), server.log()
        assert not [p for p in children if _alive(p)]
        with pytest.raises(ProcessLookupError):  # nothing is left in crispml's process group
            os.killpg(server.process.pid, 0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=5).close()


def test_serve_on_a_busy_port_exits_2(penguins_run, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", "--model", str(penguins_run.result.export_dir), "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"crispml: error: port {port} on {HOST} is in use; stop what holds it or pass another --port"
    )


def test_ui_without_a_store_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    assert main(["ui", "--tracking-uri", uri, "--port", str(free_port())]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_ui_on_a_tracking_server_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:5999"]) == 2
    assert "serves its own UI: open http://127.0.0.1:5999 in a browser" in capsys.readouterr().err


def test_run_logs_to_a_tracking_server(tmp_path: Path) -> None:
    """Team mode: `mlflow server` with a SQLite backend and proxied artifacts; `crispml run` logs over HTTP."""
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    uri = f"http://{HOST}:{port}"
    command = [
        MLFLOW, "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination", store / "artifacts", "--host", HOST, "--port", str(port), "--workers", "1",
    ]
    with running(command, tmp_path / "logs", "mlflow-server", cwd=tmp_path, env=clean_env(**LIGHT_SERVER)) as server:
        server.wait_http(f"{uri}/health")
        done = subprocess.run(
            [CRISPML, "run", "--tracking-uri", uri, "--models", "baseline,linear", "--folds", "3",
             "--n-jobs", "2", "--out", tmp_path / "models", "--json"],
            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["tracking_uri"] == uri

        client = MlflowClient(uri, registry_uri=uri)
        experiment = client.get_experiment_by_name("penguins")
        assert experiment.artifact_location.startswith("mlflow-artifacts:")
        runs = client.search_runs([experiment.experiment_id])
        parent = client.get_run(summary["run_id"])
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(runs) == 3 and parent.info.status == "FINISHED"
        assert sorted(r.info.run_name for r in children) == ["baseline", "linear"]

        holdout = summary["holdout"]["balanced_accuracy"]
        assert parent.data.metrics["holdout_balanced_accuracy"] == pytest.approx(holdout)
        for child in children:
            folds = client.get_metric_history(child.info.run_id, "fold_balanced_accuracy")
            assert sorted(m.step for m in folds) == [0, 1, 2]
            assert "balanced_accuracy_mean" in child.data.metrics

        version = client.get_model_version_by_alias("penguins", "champion")
        assert version.tags["crispml.run_id"] == parent.info.run_id
        assert summary["registered_model_uri"] == "models:/penguins@champion"

        leaderboard = pd.read_csv(io.StringIO(Path(client.download_artifacts(
            parent.info.run_id, "leaderboard.csv", str(tmp_path))).read_text()))
        assert sorted(leaderboard["model"]) == ["baseline", "linear"]

    # The artifacts went through the server into its store; nothing was written beside the client.
    assert list((store / "artifacts").rglob("leaderboard.csv"))
    assert not (tmp_path / "mlruns").exists()


# --- one model, the same answer everywhere ---------------------------------------------------------

PLAIN_MLFLOW = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.read_csv(sys.argv[2])  # as a user reads the training file: `year` is int64
gaps = frame.copy()
gaps.loc[0, "year"] = None  # a missing value makes `year` float64
out = {"plain": model.predict(frame).to_dict(orient="records"), "gaps": model.predict(gaps).head(1).to_dict(orient="records")}
try:
    model.predict(frame.drop(columns=["island"]))
except mlflow.exceptions.MlflowException as exc:
    out["error"] = exc.message
out["crispml_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "stages", "crispml"))
out["dtypes"] = [str(frame["year"].dtype), str(gaps["year"].dtype)]
print(json.dumps(out))
"""


def test_plain_mlflow_scores_the_training_file_as_pandas_reads_it_and_agrees_with_crispml_predict(
    penguins_run, batch: pd.DataFrame, tmp_path: Path
) -> None:
    """A Python that never imports crispml loads the export with `mlflow.pyfunc` alone."""
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_MLFLOW)
    env = {k: v for k, v in clean_env().items() if k != "PYTHONDONTWRITEBYTECODE"}  # as a user's Python: it writes bytecode
    done = subprocess.run(
        [str(Path(MLFLOW).with_name("python")), str(script), str(penguins_run.result.export_dir), str(DEFAULT_DATA)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["crispml_imported"] == [] and out["dtypes"] == ["int64", "float64"]
    outputs = ["prediction", *(c for c in batch.columns if c.startswith("proba_"))]
    assert out["plain"] == batch[outputs].to_dict(orient="records")  # the same columns, the same values
    assert out["gaps"][0]["prediction"] in {"Adelie", "Chinstrap", "Gentoo"}
    assert out["error"].startswith("the input lacks 1 column(s) the model needs: island;") and "\n" not in out["error"]
    # Loading it wrote Python's bytecode cache into the export; crispml still trusts and loads the folder.
    assert list((penguins_run.result.export_dir / "code").glob("__pycache__/*.pyc"))
    verify_export(penguins_run.result.export_dir)
    assert main(["predict", "--model", str(penguins_run.result.export_dir), "--data", str(DEFAULT_DATA), "--out", str(tmp_path / "s.csv")]) == 0


def test_mlflow_models_serve_answers_probabilities_and_a_one_line_400(penguins_run, batch: pd.DataFrame, tmp_path: Path) -> None:
    port = free_port()
    command = [
        MLFLOW, "models", "serve", "-m", penguins_run.result.export_dir, "--env-manager", "local",
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]
    env = clean_env(PATH=f"{Path(MLFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # it runs `uvicorn` from PATH
    with running(command, tmp_path / "logs", "mlflow-serve", cwd=tmp_path, env=env) as server:
        url = f"http://{HOST}:{port}/invocations"
        server.wait_http(f"http://{HOST}:{port}/ping")
        data = pd.read_csv(DEFAULT_DATA)
        response = _post(url, data, "csv")
        assert response.status_code == 200, response.text
        outputs = ["prediction", *(c for c in batch.columns if c.startswith("proba_"))]
        assert response.json()["predictions"] == batch[outputs].to_dict(orient="records")
        missing = _post(url, data.drop(columns=["year"]).head(3), "dataframe_split")
    assert missing.status_code == 400, missing.text
    body = missing.json()
    assert "stack_trace" not in body and body["message"].startswith("the input lacks 1 column(s) the model needs: year;")
    assert "\n" not in body["message"]
