"""Faults: a candidate that hangs, eats memory or dies; Ctrl-C and SIGTERM; a tampered model; an unusable or busy store.

Each fault must cost at most what it touches: the other candidates finish, the previous
export stays in place, the MLflow run says what happened, and the user gets one line.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from pipeline import cli
from pipeline.backends import local_pool
from pipeline.backends.local_pool import LocalPool
from pipeline.errors import (
    EXIT_TERMINATED,
    EXIT_USAGE,
    ConfigError,
    Interrupted,
    ModelLoadError,
    TrackingError,
)
from pipeline.exports import JOBLIB_MODEL, MANIFEST, export_model_dir, sealed_manifest, verify_export
from pipeline.files import sha256_of
from pipeline.runner import run
from pipeline.tracking import store
from stages import model_registry, modeling
from stages.fitting import NOT_IN_BUDGET, Task
from stages.modeling import FAILED, OK, compare_models, make_folds

from conftest import config_for, sqlite_uri

CRISPML = Path(sys.executable).parent / "crispml"


# --- candidates that misbehave ------------------------------------------------------------


class Sleepy(ClassifierMixin, BaseEstimator):
    """Hangs in fit, as a candidate stuck in a solver would."""

    def fit(self, X, y):
        time.sleep(120)
        return self


class Hungry(ClassifierMixin, BaseEstimator):
    """Asks for 400 MB more at each step until it gets a MemoryError (or the machine gives out)."""

    def fit(self, X, y):
        hoard = []
        while True:
            hoard.append(np.ones(50_000_000))


class Doomed(ClassifierMixin, BaseEstimator):
    """Its process dies mid-fit: SIGKILL as the OOM killer sends it, or SIGSEGV as a crash in native code."""

    def __init__(self, how: int = signal.SIGKILL):
        self.how = how

    def fit(self, X, y):
        os.kill(os.getpid(), self.how)
        time.sleep(10)
        return self


def classification_data(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = pd.Series(np.where(X["a"] + 0.3 * rng.normal(size=n) > 0, "yes", "no"), name="y")
    return X, y


def with_good_ones(**bad: BaseEstimator) -> dict[str, Pipeline]:
    return {
        "baseline": Pipeline([("model", DummyClassifier())]),
        **{name: Pipeline([("model", estimator)]) for name, estimator in bad.items()},
        "linear": Pipeline([("model", LogisticRegression())]),
    }


def by_name(board: modeling.Leaderboard) -> dict[str, modeling.CandidateResult]:
    return {r.name: r for r in board.rows}


def test_a_hanging_candidate_is_stopped_at_its_time_limit_and_the_others_finish(both_cores_busy):
    X, y = classification_data()
    start = time.monotonic()
    # The limit counts a candidate's fits from when each one begins on its worker, not the
    # worker's start-up (tests/pipeline/backends/test_local_pool.py); 8 s is far above linear's fits.
    board = compare_models(with_good_ones(sleepy=Sleepy()), X, y, make_folds(y, "binary", 3, 0), "binary", "accuracy", LocalPool(2), timeout=8)
    elapsed = time.monotonic() - start
    rows = by_name(board)
    assert rows["sleepy"].status == FAILED
    assert "timed out: its fits ran for more than 8 s in total (modeling.candidate_timeout)" in rows["sleepy"].error
    assert rows["linear"].status == OK and rows["baseline"].status == OK, [rows["linear"].error, rows["baseline"].error]
    assert rows["linear"].mean("accuracy") > 0.8
    assert elapsed < 60  # not the 120 s it would have slept; slack for a busy machine
    assert board.rows[-1].name == "sleepy"  # failed candidates rank last


def test_a_memory_hungry_candidate_fails_with_a_memory_error_and_the_others_finish():
    X, y = classification_data()
    board = compare_models(with_good_ones(hungry=Hungry()), X, y, make_folds(y, "binary", 3, 0), "binary", "accuracy", LocalPool(2), memory_mb=1200)
    rows = by_name(board)
    assert rows["hungry"].status == FAILED and "out of memory (MemoryError" in rows["hungry"].error
    assert rows["linear"].status == OK and rows["baseline"].status == OK


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        (signal.SIGKILL, "its worker process was killed (SIGKILL), most likely by the system for using too much memory"),
        (signal.SIGSEGV, "its worker process crashed (SIGSEGV)"),
    ],
)
def test_a_candidate_whose_process_dies_fails_alone(how, reason):
    X, y = classification_data()
    board = compare_models(with_good_ones(doomed=Doomed(how)), X, y, make_folds(y, "binary", 3, 0), "binary", "accuracy", LocalPool(2), timeout=60)
    rows = by_name(board)
    assert rows["doomed"].status == FAILED and reason in rows["doomed"].error
    assert rows["linear"].status == OK and rows["baseline"].status == OK


def test_worker_processes_give_the_same_scores_as_fitting_in_process():
    X, y = classification_data()
    folds = make_folds(y, "binary", 4, 0)
    here = compare_models(with_good_ones(), X, y, folds, "binary", "roc_auc")
    pooled = compare_models(with_good_ones(), X, y, folds, "binary", "roc_auc", LocalPool(2), timeout=60, memory_mb=4096)
    assert [r.name for r in here.rows] == [r.name for r in pooled.rows]
    for a, b in zip(here.rows, pooled.rows):
        assert a.fold_scores == b.fold_scores


def test_an_interrupted_comparison_carries_the_partial_leaderboard_and_leaves_no_worker():
    import multiprocessing

    X, y = classification_data()
    done = []

    def stop_after_first(row: modeling.CandidateResult) -> None:
        done.append(row.name)
        raise Interrupted(signal.SIGTERM)

    candidates = with_good_ones(sleepy=Sleepy())
    with pytest.raises(Interrupted) as caught:
        compare_models(candidates, X, y, make_folds(y, "binary", 3, 0), "binary", "accuracy", LocalPool(2), timeout=60, on_candidate=stop_after_first)
    assert caught.value.exit_code == EXIT_TERMINATED
    partial = caught.value.partial
    assert isinstance(partial, modeling.Leaderboard)
    rows = by_name(partial)
    assert rows[done[0]].status == OK
    assert rows["sleepy"].status == FAILED and "interrupted before it finished" in rows["sleepy"].error
    assert multiprocessing.active_children() == [] or all(not p.name.startswith("crispml") for p in multiprocessing.active_children())


def test_the_automatic_memory_limit_shares_the_machine_out():
    assert local_pool.auto_memory_limit(1) >= local_pool.auto_memory_limit(2) >= local_pool.MIN_AUTO_MEMORY
    assert local_pool.worker_count(-1, 100) == (os.cpu_count() or 1) and local_pool.worker_count(8, 3) == 3


# --- the whole run ----------------------------------------------------------------------------


def binary_file(folder: Path, n: int = 80, seed: int = 0, name: str = "churn.csv") -> Path:
    X, y = classification_data(n, seed)
    path = folder / name
    X.assign(colour=np.resize(["red", "green", "blue"], n), churned=y).to_csv(path, index=False)
    return path


def with_a_sleepy_candidate(tmp_path, monkeypatch, **limits):
    """A real run's config on a small binary file: baseline, linear and a candidate that hangs."""
    monkeypatch.setitem(model_registry.MODELS, "sleepy", model_registry.ModelSpec(regression=lambda s: Sleepy(), classification=lambda s: Sleepy()))
    return config_for(
        tmp_path,
        binary_file(tmp_path),
        **{"business.target": "churned", "modeling.models": ["baseline", "linear", "sleepy"], "modeling.folds": 3, **limits},
    )


@pytest.mark.slow
def test_a_hanging_candidate_in_a_real_run_is_a_failed_row_and_a_failed_child_run(tmp_path, monkeypatch, both_cores_busy):
    # Both cores are kept busy (the fixture): the 4 s limit must hold for the fits only, on a loaded machine too.
    config = with_a_sleepy_candidate(tmp_path, monkeypatch, **{"modeling.candidate_timeout": 4.0})
    result = run(config)
    rows = by_name(result.leaderboard)
    assert rows["sleepy"].status == FAILED and "timed out" in rows["sleepy"].error
    assert result.evaluation.model == "linear" and result.export_dir is not None
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_run(result.run_id).info.experiment_id
    child = client.search_runs([experiment], filter_string="tags.`crispml.candidate` = 'sleepy'")[0]
    assert child.info.status == "FAILED" and "timed out" in child.data.tags["crispml.error"]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (Linux)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def crispml_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
# SIGTERM only: SIGINT reaches a real run in test_hostile_runs.py's spray, and every step in-process there.
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, EXIT_TERMINATED)])
def test_a_signal_during_modeling_ends_the_run_killed_with_the_partial_leaderboard(tmp_path, signum, code):
    common = ["--experiment", "churn", "--tracking-uri", sqlite_uri(tmp_path / "mlruns"), "--out", str(tmp_path / "models")]
    # A finished run first: its export must survive the interrupted one untouched.
    small = binary_file(tmp_path, 80, name="small.csv")
    first = subprocess.run(
        [str(CRISPML), "run", "--data", str(small), "--target", "churned", "--models", "baseline,linear", "--folds", "3", *common],
        env=crispml_env(), capture_output=True, text=True, timeout=300,
    )
    assert first.returncode == 0, first.stderr
    export = tmp_path / "models" / "churn" / "model"
    before = {p.name: sha256_of(p) for p in export.rglob("*") if p.is_file()}

    # 20,000 rows: each SVM fold takes seconds, so the signal lands while it is fitting.
    big = binary_file(tmp_path, 20_000, seed=1, name="big.csv")
    proc = subprocess.Popen(
        [str(CRISPML), "run", "--data", str(big), "--target", "churned", "--models", "baseline,svm", "--folds", "5", "--n-jobs", "2", *common],
        env=crispml_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        for line in proc.stderr:  # progress lines, one per event
            lines.append(line)
            if "baseline done" in line:
                break
        assert any("baseline done" in line for line in lines), "".join(lines)
        time.sleep(0.5)  # the SVM folds are now running in the workers
        children = descendants(proc.pid)
        assert children, "the run should have worker processes"
        os.kill(proc.pid, signum)
        stdout, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = "".join(lines) + rest
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"crispml: interrupted by {signal.Signals(signum).name}" in stderr.strip().splitlines()[-1]
    deadline = time.monotonic() + 15
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in children), "worker processes outlived the run"

    client = MlflowClient(sqlite_uri(tmp_path / "mlruns"))
    experiment = client.get_experiment_by_name("churn").experiment_id
    parents = client.search_runs([experiment], filter_string="attributes.status = 'KILLED'")
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    killed = parents[0]
    board = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=killed.info.run_id, artifact_path="leaderboard.csv", tracking_uri=sqlite_uri(tmp_path / "mlruns"))
    )
    status = dict(zip(board["model"], board["status"]))
    assert status == {"baseline": "ok", "svm": "failed"}
    assert "interrupted" in board.set_index("model").loc["svm", "error"]
    assert {p.name: sha256_of(p) for p in export.rglob("*") if p.is_file()} == before  # the previous export is untouched
    verify_export(export)


@pytest.mark.slow
def test_two_runs_at_once_against_a_fresh_store_both_complete_and_are_recorded(tmp_path):
    data = binary_file(tmp_path)
    command = [str(CRISPML), "run", "--data", str(data), "--target", "churned", "--models", "baseline,linear", "--folds", "3", "--n-jobs", "1", "--experiment", "churn", "--json"]
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=crispml_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    run_ids = {json.loads(out)["run_id"] for out, _ in outputs}
    assert len(run_ids) == 2
    uri = "sqlite:///" + str(tmp_path / "mlruns" / "mlflow.db")
    client = MlflowClient(uri, registry_uri=uri)  # not this process's registry, which other tests set
    for run_id in run_ids:
        assert client.get_run(run_id).info.status == "FINISHED"
    versions = client.search_model_versions("name='churn'")
    summary = [{k: json.loads(out)[k] for k in ("run_id", "decision", "registered_model_uri", "model_uri")} for out, _ in outputs]
    assert sorted(int(v.version) for v in versions) == [1, 2], (summary, [(v.version, v.run_id) for v in versions], [e for _, e in outputs])
    verify_export(tmp_path / "models" / "churn" / "model")  # whichever run moved it in last, it is whole


# --- the exported model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A run exported to a folder and registered: (folder, tracking URI, training file)."""
    tmp = tmp_path_factory.mktemp("export")
    config = config_for(
        tmp,
        binary_file(tmp),
        **{"business.target": "churned", "modeling.models": ["baseline", "linear"], "modeling.folds": 3, "modeling.n_jobs": 1},
    )
    result = run(config)
    return result.export_dir, config.tracking_uri, Path(config.data.path)


def copy_of(exported: tuple[Path, str, Path], tmp: Path) -> Path:
    folder = tmp / "model"
    shutil.copytree(exported[0], folder)
    return folder


def predict(model: str, data: Path, tmp: Path, capsys, tracking_uri: str = "") -> tuple[int, str]:
    args = ["predict", "--model", model, "--data", str(data), "--out", str(tmp / "scored.csv"), "--overwrite"]
    code = cli.main(args + (["--tracking-uri", tracking_uri] if tracking_uri else []))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("tamper", ["changed", "removed", "added"])
def test_predict_refuses_a_folder_that_does_not_match_its_manifest(exported, tmp_path, capsys, tamper):
    folder = copy_of(exported, tmp_path)
    if tamper == "changed":
        (folder / "model.skops").write_bytes((folder / "model.skops").read_bytes() + b"\0")
        words = "model.skops does not match the SHA-256 in manifest.json"
    elif tamper == "removed":
        (folder / "requirements.txt").unlink()
        words = "is missing requirements.txt, which its manifest.json lists"
    else:
        (folder / "sitecustomize.py").write_text("print('hello')\n")
        words = "holds sitecustomize.py, which its manifest.json does not list"
    code, err = predict(str(folder), exported[2], tmp_path, capsys)
    assert code == EXIT_USAGE and words in err and "Traceback" not in err
    assert not (tmp_path / "scored.csv").exists()


class _Trap:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_swapped_pickle_is_refused_before_anything_is_loaded(exported, tmp_path, capsys):
    import pickle

    folder = copy_of(exported, tmp_path)
    evidence = tmp_path / "pickle-was-loaded"
    (folder / JOBLIB_MODEL).write_bytes(pickle.dumps(_Trap(evidence)))
    code, err = predict(str(folder), exported[2], tmp_path, capsys)
    assert code == EXIT_USAGE and f"{JOBLIB_MODEL} does not match the SHA-256" in err
    assert not evidence.exists()


def test_predict_warns_when_the_model_was_saved_by_other_versions(exported, tmp_path, capsys):
    folder = copy_of(exported, tmp_path)
    mlmodel = folder / "MLmodel"
    text = mlmodel.read_text()
    text = text.replace(f"sklearn_version: {importlib.metadata.version('scikit-learn')}", "sklearn_version: 1.5.0")
    text = text.replace(f"mlflow_version: {mlflow.__version__}", "mlflow_version: 3.0.0")
    mlmodel.write_text(text)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["MLmodel"] = hashlib.sha256(mlmodel.read_bytes()).hexdigest()  # as a genuine older export
    (folder / MANIFEST).write_text(sealed_manifest(manifest))
    code, err = predict(str(folder), exported[2], tmp_path, capsys)
    assert code == 0, err
    assert "was saved with scikit-learn 1.5.0 but" in err and "install scikit-learn==1.5.0" in err
    assert "was saved with mlflow 3.0.0 but" in err


def test_the_contract_travels_with_the_registered_model(exported, tmp_path, capsys):
    folder, uri, data = exported
    rows = pd.read_csv(data)
    rows.loc[0, "colour"] = "purple"
    rows.to_csv(tmp_path / "new.csv", index=False)
    code, err = predict("models:/churn@champion", tmp_path / "new.csv", tmp_path, capsys, tracking_uri=uri)
    assert code == 0, err
    assert "drift: column 'colour' has 1 of 80 rows with a category not seen in training (e.g. 'purple')" in err
    manifest = json.loads((folder / MANIFEST).read_text())
    assert [c["name"] for c in manifest["crispml_contract"]["columns"]] == ["a", "b", "colour"]
    client = MlflowClient(uri, registry_uri=uri)
    run_id = client.get_model_version_by_alias("churn", "champion").run_id
    contract = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="contract.json", tracking_uri=uri)).read_text())
    assert contract == manifest["crispml_contract"]


def test_a_failed_export_leaves_the_previous_model_in_place(tmp_path, monkeypatch):
    target = tmp_path / "models" / "churn" / "model"

    def write(content: str):
        def writer(folder: Path) -> None:
            folder.mkdir()
            (folder / "MLmodel").write_text(content)

        return writer

    export_model_dir(target, write("old"), {"w": 1}, {})
    before = {p.name: sha256_of(p) for p in target.rglob("*") if p.is_file()}

    def crash(folder: Path) -> None:
        folder.mkdir()
        (folder / "MLmodel").write_text("half")
        raise OSError("disk full")

    with pytest.raises(ConfigError, match=r"cannot write the model export .* \(disk full\); the previous export, if any, is left in place"):
        export_model_dir(target, crash, {"w": 2}, {})
    real_replace = os.replace
    calls = []

    def interrupted_swap(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the moment the new folder would move in
            raise Interrupted(signal.SIGTERM)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_swap)
    with pytest.raises(Interrupted):
        export_model_dir(target, write("new"), {"w": 3}, {})
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(calls) == 3  # old moved aside, new refused, old moved back
    assert {p.name: sha256_of(p) for p in target.rglob("*") if p.is_file()} == before
    assert (target / "MLmodel").read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no half-written folder beside it
    verify_export(target)


# --- the tracking store -----------------------------------------------------------------------


def _read_only(folder: Path):
    """Make a folder read-only even for root (chattr +i), or skip."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("running as root and chattr +i is not available here")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("existing", [False, True], ids=["new store", "existing store"])
def test_a_read_only_store_folder_fails_before_any_training(tmp_path, monkeypatch, capsys, existing):
    folder = tmp_path / "store"
    folder.mkdir()
    if existing:
        store.check_store(sqlite_uri(folder), writable=True)  # creates the database
    undo = _read_only(folder)
    try:
        data = binary_file(tmp_path)
        monkeypatch.chdir(tmp_path)
        code = cli.main(["run", "--data", str(data), "--target", "churned", "--models", "baseline", "--folds", "2", "--tracking-uri", sqlite_uri(folder)])
    finally:
        undo()
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "Traceback" not in err
    assert f"the tracking folder {folder} for" in err and "is not writable" in err
    assert "modeling" not in err  # nothing was trained
    assert not (tmp_path / "models").exists()


def test_a_locked_store_fails_early_with_a_clear_error(tmp_path, monkeypatch, capsys):
    uri = sqlite_uri(tmp_path / "mlruns")
    store.check_store(uri, writable=True)
    holder = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db")
    holder.execute("BEGIN EXCLUSIVE")  # as a stuck process or an open sqlite3 shell would
    try:
        with pytest.raises(TrackingError, match=r"is locked by another process; waited 0.5 s"):
            store.check_store(uri, timeout=0.5, writable=True)
        monkeypatch.setattr(store, "STORE_TIMEOUT", 0.5)
        monkeypatch.chdir(tmp_path)
        start = time.monotonic()
        code = cli.main(["run", "--data", str(binary_file(tmp_path)), "--target", "churned", "--models", "baseline", "--folds", "2", "--tracking-uri", uri])
        assert time.monotonic() - start < 30
    finally:
        holder.rollback()
        holder.close()
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "is locked by another process" in err and "modeling" not in err


def test_a_model_folder_without_a_manifest_is_not_loaded(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(ModelLoadError, match="has no manifest.json"):
        verify_export(tmp_path)


def test_a_viewer_needs_only_to_read_the_store(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    store.check_store(sqlite_uri(folder), writable=True)
    undo = _read_only(folder)
    try:
        store.check_store(sqlite_uri(folder))  # what `crispml ui` asks: reading is enough
        with pytest.raises(TrackingError, match="is not writable"):
            store.check_store(sqlite_uri(folder), writable=True)
    finally:
        undo()


def test_a_deadline_stops_running_tasks_and_skips_the_rest():
    def nap(shared, seconds):
        time.sleep(seconds)
        return seconds

    tasks = [Task("quick", 0.1), Task("slow", 30.0), Task("slow", 30.0), Task("late", 0.1)]
    start = time.monotonic()
    outcomes = LocalPool(1).run(nap, None, tasks, deadline=start + 3.0)
    assert time.monotonic() - start < 20.0  # the 30 s naps were stopped; slack for a busy machine
    assert outcomes[0].value == 0.1
    assert [o.error for o in outcomes[1:]] == [NOT_IN_BUDGET] * 3


@pytest.mark.slow
def test_a_time_budget_reports_unfinished_candidates_and_still_exports_a_model(tmp_path, monkeypatch):
    # 45 s: on a busy machine baseline's and linear's fits, worker start-up included, must fit well inside
    # the cross-validation's share of the budget (80%), or no candidate would finish at all.
    config = with_a_sleepy_candidate(tmp_path, monkeypatch, **{"modeling.time_budget": 45.0})
    start = time.monotonic()
    result = run(config)
    elapsed = time.monotonic() - start
    rows = by_name(result.leaderboard)
    assert rows["sleepy"].status == modeling.UNFINISHED and "time budget" in rows["sleepy"].error
    assert rows["linear"].status == OK and rows["baseline"].status == OK
    assert result.evaluation.model == "linear" and result.decision.go and result.export_dir is not None
    assert "| sleepy | unfinished: " in (result.export_dir / "model_card.md").read_text()  # not "failed"
    # The sleepy candidate never ends by itself: that the run ends at all shows the budget stopped it. The slack
    # is for the refit, holdout and export after the deadline, which take many times longer on a busy machine.
    assert elapsed < 45.0 + 60.0
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_run(result.run_id).info.experiment_id
    child = client.search_runs([experiment], filter_string="tags.`crispml.candidate` = 'sleepy'")[0]
    assert child.data.tags["crispml.status"] == modeling.UNFINISHED
