"""Hostile runs: the end of a run that fails or is stopped, signals at bad moments, stray staging folders (issue 15).

The registry moves only when a run succeeds: whatever stops a run (an error, SIGTERM at
any moment, SIGKILL), `champion` stays on a run that FINISHED and whose export is in place,
no run is left RUNNING by a signal, and a staging folder a killed export left is removed
by the next one, and only that.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline import cli, exports, interrupts
from pipeline.backends import local_pool
from pipeline.errors import EXIT_TERMINATED, EXIT_USAGE
from pipeline.exports import MANIFEST, STAGING_MARKER, export_model_dir, remove_stale_staging, verify_export
from pipeline.files import sha256_of
from pipeline.tracking import loading, model_format
from pipeline.tracking import runs as tracking
from pipeline.tracking.registry import CHAMPION

from conftest import sqlite_uri
from hostile import RUN, Hostile, both, csv, labelled, raw, run_case

CRISPML = Path(sys.executable).parent / "crispml"
EXPERIMENT = "t"


# --- the catalogue --------------------------------------------------------------------------

CASES = [
    Hostile(
        "the export folder is a file of the user's",
        (*RUN, "--data", "t.csv", "--target", "label"),
        ("models/t/model", "is a file, not a folder", "move it away"),
        both(csv("t.csv", labelled()), raw("models/t/model", "the user's own file\n")),
        may_write=("mlruns",),  # nothing under models/ may change: the user's file stays as it is
    ),
    Hostile(
        "the export folder is a model folder of the user's",
        (*RUN, "--data", "t.csv", "--target", "label"),
        ("models/t/model exists and is not a crispml export", "move it away"),
        both(csv("t.csv", labelled()), raw("models/t/model/precious.txt", "the user's own model\n")),
        may_write=("mlruns",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_runs(case, tmp_path, capsys, monkeypatch):
    run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)


# --- the end of a run: an error or a signal at each step ---------------------------------------


@dataclass(frozen=True)
class Registry:
    """What a scheduler scoring `models:/t@champion` relies on."""

    champion: str | None
    champion_run: str | None
    versions: tuple[str, ...]


def registry(uri: str) -> Registry:
    client = MlflowClient(uri, registry_uri=uri)
    try:
        champion = client.get_model_version_by_alias(EXPERIMENT, CHAMPION)
    except MlflowException:
        champion = None
    versions = tuple(sorted(str(v.version) for v in client.search_model_versions(f"name = '{EXPERIMENT}'")))
    return Registry(champion and str(champion.version), champion and champion.run_id, versions)


def parent_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id])


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def strays(export: Path) -> list[str]:
    """Anything beside the export folder: staging folders left behind."""
    return sorted(p.name for p in export.parent.iterdir() if p.name != export.name)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data, a store and an export: one run has made version 1 the champion."""
    base = tmp_path_factory.mktemp("deployed")
    labelled().to_csv(base / "t.csv", index=False)
    code = cli.main([*end_args(base), "--candidate-timeout", "0"])
    assert code == 0
    return base


def end_args(folder: Path) -> list[str]:
    return [
        *RUN, "--data", str(folder / "t.csv"), "--target", "label", "--experiment", EXPERIMENT,
        "--tracking-uri", sqlite_uri(folder / "mlruns"), "--out", str(folder / "models"),
    ]


def sigterm() -> None:
    """SIGTERM to this process: the command line's handler sees it at once (or holds it, in a store write)."""
    os.kill(os.getpid(), signal.SIGTERM)


def after(original: Callable, then: Callable[..., None]) -> Callable:
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        then(*args, **kwargs)
        return result

    return wrapped


def before(original: Callable, first: Callable[..., None]) -> Callable:
    def wrapped(*args, **kwargs):
        first(*args, **kwargs)
        return original(*args, **kwargs)

    return wrapped


def once(action: Callable[[], None]) -> Callable[..., None]:
    done = []

    def run(*args, **kwargs):
        if not done:
            done.append(1)
            action()

    return run


def _log_model(mp):  # the model is logged to the run (MLflow's Model.log saves it through crispml's flavor): a store write, held
    flavor = model_format.CONTRACT_FLAVOR
    mp.setattr(flavor, "save_model", after(flavor.save_model, lambda *a, **k: sigterm()))


def _copy(mp):  # the export's files are written into the staging folder
    mp.setattr(loading, "copy_logged_model", after(loading.copy_logged_model, lambda *a, **k: sigterm()))


def _register(mp):  # the new version exists, no alias moved yet
    mp.setattr(mlflow, "register_model", after(mlflow.register_model, lambda *a, **k: sigterm()))


def _moves(mp):  # the new folder is in place, the old one aside: the commit is next
    mp.setattr(interrupts, "check", before(interrupts.check, once(sigterm)))


def _ending(mp):  # the run is being ended FINISHED: too late to stop; the commit completes
    mp.setattr(mlflow, "end_run", after(mlflow.end_run, lambda status="FINISHED": status == "FINISHED" and sigterm()))


def _alias_refused(mp):  # the store refuses the last write, the alias
    def refuse(self, name, alias, version):
        raise MlflowException("database is locked")

    mp.setattr(MlflowClient, "set_registered_model_alias", refuse)


def _disk_full(mp):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr(exports.joblib, "dump", full)


def _last_candidate(mp):  # every fit is in; the cross-validation's pool is stopping its workers
    fire = once(sigterm)

    def in_the_main_thread(*args, **kwargs):  # the plots' pools stop their workers in a thread of their own
        if threading.current_thread() is threading.main_thread():
            fire()

    mp.setattr(local_pool, "_stop", before(local_pool._stop, in_the_main_thread))


def _child_run(mp):  # a candidate's child run was just created
    def child(self, experiment_id, *args, tags=None, **kwargs):
        return "mlflow.parentRunId" in (tags or {}) and sigterm()

    mp.setattr(MlflowClient, "create_run", after(MlflowClient.create_run, child))


def _start(mp):  # the parent run was just created
    mp.setattr(mlflow, "start_run", after(mlflow.start_run, lambda *a, **k: sigterm()))


def _mid_transaction(mp):
    """SIGTERM inside SQLAlchemy, just after a store write's first statement ran, before its COMMIT.

    Raised there, it cut the write half-way (in the issue, it left the SQLite write lock
    held, and the write that marks the run KILLED failed with 'database is locked').
    """
    from sqlalchemy.engine.default import DefaultDialect

    WRITES.clear()

    def fire(self, cursor, statement, *args, **kwargs):
        if WRITES == ["log_params"] and statement.lstrip().upper().startswith("INSERT INTO PARAMS"):
            WRITES.append(statement)
            sigterm()

    mp.setattr(tracking.PipelineRun, "log_params", before(tracking.PipelineRun.log_params, lambda *a: WRITES.append("log_params")))
    mp.setattr(DefaultDialect, "do_execute", after(DefaultDialect.do_execute, fire))
    mp.setattr(DefaultDialect, "do_executemany", after(DefaultDialect.do_executemany, fire))


WRITES: list[str] = []
"""The store write `_mid_transaction` interrupts, and the statement it interrupted."""


@dataclass(frozen=True)
class Moment:
    id: str
    patch: Callable[[pytest.MonkeyPatch], None]
    code: int
    committed: bool = False  # the run had committed: its model is the champion and the export
    status: str = "KILLED"
    words: str = "crispml: interrupted by SIGTERM"
    workers: bool = False  # fits in worker processes (the pool), not in this process
    whole: Callable[[str, object], None] | None = None  # checks that the write the signal hit was done whole


def params_whole(uri: str, run: object) -> None:
    assert len(WRITES) == 2  # the signal came inside the parameters' INSERT
    assert run.data.params["seed"] == "42" and run.data.params["modeling.folds"] == "3"  # yet all were written


def child_whole(uri: str, run: object) -> None:
    children = [r for r in all_runs(uri) if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert {"fold_roc_auc", "roc_auc_mean", "fit_seconds"} <= set(children[0].data.metrics)


MOMENTS = [
    Moment("SIGTERM as the run starts", _start, EXIT_TERMINATED),
    Moment("SIGTERM inside a store write's transaction", _mid_transaction, EXIT_TERMINATED, whole=params_whole),
    Moment("SIGTERM as a child run is created", _child_run, EXIT_TERMINATED, whole=child_whole),
    Moment("SIGTERM as the last candidate finishes", _last_candidate, EXIT_TERMINATED, workers=True),
    Moment("SIGTERM while the model is logged", _log_model, EXIT_TERMINATED),
    Moment("SIGTERM while the export is written", _copy, EXIT_TERMINATED),
    Moment("SIGTERM as the version is registered", _register, EXIT_TERMINATED),
    Moment("SIGTERM between the export's moves", _moves, EXIT_TERMINATED),
    Moment("SIGTERM as the run ends FINISHED", _ending, EXIT_TERMINATED, committed=True, status="FINISHED"),
    Moment("the store refuses the alias", _alias_refused, EXIT_USAGE, status="FAILED", words="cannot record the end of run"),
    Moment("the disk fills during the export", _disk_full, EXIT_USAGE, status="FAILED", words="No space left on device"),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=[m.id for m in MOMENTS])
def test_a_run_stopped_at_any_step_leaves_the_registry_and_the_export_in_step(moment, deployed, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(deployed, work)
    uri = sqlite_uri(work / "mlruns")
    export = work / "models" / EXPERIMENT / "model"
    found, exported = registry(uri), hashes(export)
    assert found.champion == "1" and found.versions == ("1",)
    moment.patch(monkeypatch)
    code = cli.main([*end_args(work), *(() if moment.workers else ("--candidate-timeout", "0"))])
    monkeypatch.undo()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == moment.code and "Traceback" not in err, err
    last = "crispml: interrupted by SIGTERM" if code == EXIT_TERMINATED else "crispml: error: "
    assert lines[-1].startswith(last) and moment.words in lines[-1], err
    assert all(line.startswith(("[", "crispml: warning: ")) for line in lines[:-1]), err

    runs = parent_runs(uri)
    assert len(runs) == 2  # the deployed run and this one
    mine = runs[-1]
    assert mine.info.status == moment.status
    if moment.whole is not None:
        moment.whole(uri, mine)
    assert not [r for r in all_runs(uri) if r.info.status == "RUNNING"]  # child runs too
    now = registry(uri)
    if moment.committed:
        assert now.champion_run == mine.info.run_id and now.versions == ("1", now.champion)
        manifest = verify_export(export)
        assert manifest["mlflow"]["run_id"] == mine.info.run_id and manifest["mlflow"]["version"] == now.champion
        assert mine.data.tags["crispml.export_dir"] == str(export.resolve())
    else:
        assert now == found  # no new version, champion where it was
        assert hashes(export) == exported  # the previous export, untouched
        assert "crispml.export_dir" not in mine.data.tags
    assert strays(export) == []


def test_the_partial_leaderboard_survives_a_signal_as_the_last_candidate_finishes(deployed, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(deployed, work)
    uri = sqlite_uri(work / "mlruns")
    _last_candidate(monkeypatch)
    assert cli.main(end_args(work)) == EXIT_TERMINATED
    monkeypatch.undo()
    capsys.readouterr()
    mine = parent_runs(uri)[-1]
    board = mlflow.artifacts.download_artifacts(run_id=mine.info.run_id, artifact_path="leaderboard.csv", tracking_uri=uri)
    text = Path(board).read_text()
    assert "interrupted" not in text and text.count(",ok,") == 2  # both had finished: kept, not lost
    children = [r for r in all_runs(uri) if r.data.tags.get("mlflow.parentRunId") == mine.info.run_id]
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED"]


# --- staging folders a killed export left behind -----------------------------------------------

EXPORTER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from pipeline.exports import export_model_dir

    target, ready, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def write(folder):
        folder.mkdir()
        (folder / "MLmodel").write_text("new")
        if how == "staging":
            ready.touch()
            time.sleep(600)

    if how == "between":  # SIGKILL at the second move: the old folder is aside, the new one not yet in
        move = os.replace

        def replace(src, dst):
            if Path(src).parent.name.startswith(".model."):
                os.kill(os.getpid(), signal.SIGKILL)
            move(src, dst)

        os.replace = replace
    export_model_dir(target, write, {"w": 1}, {})
    """
)


def exporter(target: Path, how: str) -> subprocess.Popen:
    """A process inside an export: 'staging' stops while writing its files; 'between' kills itself between the moves."""
    ready = target.parent / f"ready-{how}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER, str(target), str(ready), how], env=env)
    if how != "staging":
        proc.wait(timeout=120)
        return proc
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the exporting process did not get going"
        time.sleep(0.05)
    ready.unlink()
    return proc


def write(content: str) -> Callable[[Path], None]:
    def writer(folder: Path) -> None:
        folder.mkdir()
        (folder / "MLmodel").write_text(content)

    return writer


def staging_folders(target: Path) -> list[Path]:
    return sorted(target.parent.glob(".model.*.tmp"))


def test_the_next_export_removes_a_killed_exports_staging_folder_and_nothing_else(tmp_path):
    target = tmp_path / "models" / EXPERIMENT / "model"
    export_model_dir(target, write("old"), {"w": 0}, {})
    live = exporter(target, "staging")  # a run exporting right now: its folder is not stray
    try:
        (held,) = staging_folders(target)
        killed = exporter(target, "staging")
        (stale,) = [p for p in staging_folders(target) if p != held]
        assert (stale / STAGING_MARKER).is_file()
        killed.kill()
        killed.wait()
        notes = target.parent / ".model.notes.tmp"  # the user's own, without crispml's marker
        notes.mkdir()
        (notes / "todo.txt").write_text("mine\n")

        export_model_dir(target, write("newer"), {"w": 2}, {})
        assert not stale.exists()
        assert (held / STAGING_MARKER).is_file()
        assert (notes / "todo.txt").read_text() == "mine\n"
        assert (target / "MLmodel").read_text() == "newer"
        verify_export(target)
    finally:
        live.kill()
        live.wait()
    assert remove_stale_staging(target) == [held]  # its holder is gone now
    assert staging_folders(target) == [notes]


@pytest.mark.parametrize("step", ["mkdtemp", "open", "flock"])
def test_a_signal_while_the_staging_folder_is_made_leaves_none_behind(tmp_path, monkeypatch, step):
    """SIGTERM lands between two lines of making the staging folder: the export stops and leaves no folder."""
    target = tmp_path / "models" / EXPERIMENT / "model"
    export_model_dir(target, write("old"), {"w": 0}, {})
    wrapped = {"mkdtemp": (exports.tempfile, "mkdtemp"), "open": (exports, "open"), "flock": (exports.fcntl, "flock")}
    owner, name = wrapped[step]
    real = getattr(owner, name, open)

    fired = []

    def then_a_signal(*args, **kwargs):
        result = real(*args, **kwargs)
        if not fired:  # once: a second signal exits the process at once
            fired.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(owner, name, then_a_signal, raising=False)
    with interrupts.on_signals(), pytest.raises(interrupts.Interrupted):
        export_model_dir(target, write("new"), {"w": 1}, {})
    monkeypatch.undo()
    assert fired == [step] and staging_folders(target) == []
    assert (target / "MLmodel").read_text() == "old"


def test_a_kill_between_the_moves_gives_the_old_export_back(tmp_path):
    target = tmp_path / "models" / EXPERIMENT / "model"
    export_model_dir(target, write("old"), {"w": 0}, {})
    before = hashes(target)
    killed = exporter(target, "between")
    assert killed.returncode == -signal.SIGKILL
    assert not target.exists()  # the old folder is in the staging folder, the new one not yet in
    (stale,) = staging_folders(target)
    assert remove_stale_staging(target) == [stale]
    assert hashes(target) == before and (target / "MLmodel").read_text() == "old"
    verify_export(target)
    assert staging_folders(target) == []


def test_two_exports_of_one_experiment_swap_and_commit_one_after_the_other(tmp_path):
    import fcntl

    target = tmp_path / "models" / EXPERIMENT / "model"
    export_model_dir(target, write("old"), {"w": 0}, {})
    other = os.open(target.parent, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)  # another run, between its swap and its commit
    seen, done = [], threading.Event()

    def export() -> None:
        export_model_dir(target, write("new"), {"w": 1}, {}, commit=lambda: seen.append((target / "MLmodel").read_text()))
        done.set()

    thread = threading.Thread(target=export, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not any((p / "model" / MANIFEST).exists() for p in staging_folders(target)):
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        assert not done.wait(0.3) and seen == [] and (target / "MLmodel").read_text() == "old"  # it waits its turn
    finally:
        os.close(other)
    thread.join(120)
    assert done.is_set() and seen == ["new"] and (target / "MLmodel").read_text() == "new"


# --- a real run, stopped at many moments ------------------------------------------------------


class Watched:
    """A `crispml run` subprocess whose stderr lines are collected as they come."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.proc = subprocess.Popen(
            [str(CRISPML), *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)
        return code, "".join(self.lines)


def line(words: str, nth: int = 1, delay: float = 0.0) -> Callable[[Watched, Path], bool]:
    """The moment the `nth` stderr line holding `words` has been printed, plus `delay` seconds."""
    seen: dict[str, float] = {}

    def moment(watched: Watched, export: Path) -> bool:
        if "at" not in seen and sum(words in x for x in list(watched.lines)) >= nth:
            seen["at"] = time.monotonic()
        return "at" in seen and time.monotonic() >= seen["at"] + delay

    return moment


def staged(inside: str = "") -> Callable[[Watched, Path], bool]:
    """The moment a staging folder (holding `inside`, if given) is beside the export."""

    def moment(watched: Watched, export: Path) -> bool:
        return any((p / inside).exists() if inside else True for p in staging_folders(export))

    return moment


SPRAY = [  # (moment, how to find it, the signal); each is one run (the in-process MOMENTS above hit each step exactly)
    # The moments a real process has and an in-process run does not time the same way: the
    # end of the comparison, and the export's staging and swap (the start of a run, the gate
    # and the end are MOMENTS above).
    ("last candidate done", line(" done: ", 2), signal.SIGTERM),
    ("0.08 s after the last candidate", line(" done: ", 2, 0.08), signal.SIGINT),
    ("export staging", staged(), signal.SIGTERM),
    ("export swapped in", staged("previous"), signal.SIGTERM),
]


def check_consistent(uri: str, export: Path, killed_runs: set[str]) -> None:
    """champion is on a FINISHED run whose export is in place; no live version of a run that did not finish."""
    client = MlflowClient(uri, registry_uri=uri)
    running = [r.info.run_id for r in all_runs(uri) if r.info.status == "RUNNING"]
    assert set(running) <= killed_runs, running  # only SIGKILLed runs stay RUNNING
    champion = client.get_model_version_by_alias(EXPERIMENT, CHAMPION)
    assert client.get_run(champion.run_id).info.status == "FINISHED"
    manifest = verify_export(export)
    assert manifest["mlflow"]["run_id"] == champion.run_id and manifest["mlflow"]["version"] == str(champion.version)
    for version in client.search_model_versions(f"name = '{EXPERIMENT}'"):
        assert version.run_id in killed_runs or client.get_run(version.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_sigterm_at_any_moment_of_a_real_run_and_sigkill_in_its_export_leave_it_all_in_step(tmp_path):
    labelled().to_csv(tmp_path / "t.csv", index=False)
    args = [*RUN, "--data", "t.csv", "--target", "label", "--experiment", EXPERIMENT]
    uri = sqlite_uri(tmp_path / "mlruns")
    export = tmp_path / "models" / EXPERIMENT / "model"
    code, err = Watched(args, tmp_path).finish()
    assert code == 0, err
    outcomes = {}
    for name, moment, signum in SPRAY:
        watched = Watched(args, tmp_path)
        while watched.proc.poll() is None and not moment(watched, export):
            time.sleep(0.002)
        if watched.proc.poll() is None:
            watched.proc.send_signal(signum)
        code, err = watched.finish()
        outcomes[name] = code
        assert code in (0, 128 + signum), (name, err)  # 0: it had finished
        assert "Traceback" not in err and "Exception ignored" not in err, (name, err)
        if code:
            assert err.strip().splitlines()[-1].startswith(f"crispml: interrupted by {signum.name}"), (name, err)
        check_consistent(uri, export, set())
        assert strays(export) == [], name
    assert sum(code != 0 for code in outcomes.values()) >= len(SPRAY) // 2, outcomes  # most landed in the run

    # SIGKILL while the export is staged: nothing can be cleaned up then, but champion is safe,
    # and the next run removes the staging folder it left.
    watched = Watched(args, tmp_path)
    while watched.proc.poll() is None and not staged("model/model.joblib")(watched, export):
        time.sleep(0.002)
    watched.proc.kill()
    watched.finish()
    killed = {r.info.run_id for r in parent_runs(uri) if r.info.status == "RUNNING"}
    check_consistent(uri, export, killed)
    code, err = Watched(args, tmp_path).finish()
    assert code == 0, err
    check_consistent(uri, export, killed)
    assert strays(export) == []
    assert json.loads((export / MANIFEST).read_text())["mlflow"]["run_id"] == parent_runs(uri)[-1].info.run_id
