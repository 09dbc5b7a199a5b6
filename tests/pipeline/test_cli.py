"""The command line as a user runs it: a subprocess, exit codes, stdout and stderr."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
CRISPML = Path(sys.executable).parent / "crispml"

pytestmark = pytest.mark.slow


def crispml(*args: str, cwd: Path, module: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "pipeline", *args] if module else [str(CRISPML), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crispml: error: "), proc.stderr
    return lines[0]


def test_run_json_uses_the_default_data_and_local_store(tmp_path):
    proc = crispml("run", "--models", "baseline,linear", "--folds", "3", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert out["task"] == "multiclass" and out["metric"] == "balanced_accuracy"
    assert [r["model"] for r in out["leaderboard"]] == ["linear", "baseline"]
    assert out["leaderboard"][0]["status"] == "ok" and 0.9 < out["leaderboard"][0]["mean"]["accuracy"] <= 1
    assert out["chosen_model"] == "linear" and set(out["holdout"]) >= {"accuracy", "roc_auc"}
    top, baseline = out["leaderboard"]
    assert top["p_worse"] == 0.0 and top["equivalent"] is True
    assert baseline["p_worse"] > 0.99 and baseline["equivalent"] is False and baseline["within_noise"] is False
    selection = out["selection"]
    assert selection["rule"] == "simplest_equivalent" and selection["chosen"] == "linear" and selection["top"] == "linear"
    assert selection["tolerance"] == 0.005 and selection["tolerance_basis"] == "0.005 balanced_accuracy"
    assert "0.005 balanced_accuracy" in selection["reason"]
    assert out["registered_model_uri"] == "models:/penguins@champion"
    assert out["tracking_uri"] == "sqlite:///mlruns/mlflow.db"
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert (tmp_path / out["export_path"] / "MLmodel").is_file()
    assert "[" not in proc.stderr  # no progress lines with --json


def test_run_prints_progress_and_a_leaderboard(tmp_path):
    proc = crispml("run", "--models", "baseline,linear", "--folds", "3", "--experiment", "demo", cwd=tmp_path, module=True)
    assert proc.returncode == 0, proc.stderr
    for stage in ["understanding", "preparation", "modeling", "evaluation", "deployment"]:
        assert stage in proc.stderr
    assert "Leaderboard (3-fold CV, ranked by balanced_accuracy)" in proc.stdout
    assert "To look at it: crispml ui --experiment demo" in proc.stdout
    assert "Chosen: linear" in proc.stdout and (tmp_path / "models" / "demo" / "model" / "MLmodel").is_file()
    header = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("rank"))
    assert header.split()[-4:] == ["diff_vs_top", "p_value", "p_worse", "fit_s"]
    assert "p_worse: chance of losing more than the tolerance (0.005 balanced_accuracy)" in proc.stdout
    assert "Chosen: linear, by simplest_equivalent: linear has the best mean balanced_accuracy" in proc.stdout


def test_predict_scores_every_row(penguins_run, tmp_path):
    out = tmp_path / "scored.csv"
    proc = crispml("predict", "--model", str(penguins_run.result.export_dir), "--data", str(penguins_run.config.data.path), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    scored = pd.read_csv(out)
    source = pd.read_csv(penguins_run.config.data.path)
    assert len(scored) == len(source)
    assert list(scored.columns) == [*source.columns, "prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]
    assert (scored["prediction"] == scored["species"]).mean() > 0.95


def test_predict_by_registry_uri_matches_the_folder(penguins_run, tmp_path):
    by_uri = tmp_path / "uri.parquet"
    proc = crispml(
        "predict", "--model", "models:/penguins@champion", "--data", str(penguins_run.config.data.path),
        "--out", str(by_uri), "--tracking-uri", penguins_run.tracking_uri, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    by_dir = tmp_path / "dir.csv"
    crispml("predict", "--model", str(penguins_run.result.export_dir), "--data", str(penguins_run.config.data.path), "--out", str(by_dir), cwd=tmp_path)
    assert (pd.read_parquet(by_uri)["prediction"] == pd.read_csv(by_dir)["prediction"]).all()


def test_predict_refuses_to_overwrite(penguins_run, tmp_path):
    out = tmp_path / "scored.csv"
    out.write_text("precious\n")
    proc = crispml("predict", "--model", str(penguins_run.result.export_dir), "--data", str(penguins_run.config.data.path), "--out", str(out), cwd=tmp_path)
    assert "already exists" in one_line_error(proc) and out.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--folds", "three"], "invalid int value: 'three'"),
        (["run", "--target", "specie"], "did you mean 'species'?"),
        (["run", "--models", "linear,xgboost"], "unknown model 'xgboost'"),
        (["run", "--metric", "r2"], "metric 'r2' does not fit a multiclass task"),
        (["run", "--data", "nope.csv", "--target", "y"], "data file nope.csv does not exist"),
        (["run", "--data", "elsewhere.csv"], "--data elsewhere.csv needs --target"),
        (["predict", "--model", "no/such/dir", "--data", "x.csv", "--out", "y.csv"], "no model at no/such/dir"),
        ([], "no command given"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys, args, words):
    # In this process: the same `main` the console script calls, 5 s a case quicker than a new
    # interpreter; the console script and `python -m pipeline` are run as subprocesses below.
    from pipeline import cli

    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's own usage errors exit from parse_args
        code = exc.code
    line = one_line_error(subprocess.CompletedProcess(args, code, "", capsys.readouterr().err))
    assert words in line
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlruns").exists()  # nothing written


def test_the_console_script_gives_a_user_error_in_one_line(tmp_path):
    line = one_line_error(crispml("run", "--folds", "three", cwd=tmp_path))
    assert "invalid int value: 'three'" in line and not (tmp_path / "mlruns").exists()


def test_python_dash_m_pipeline_is_the_same_command_with_the_same_exit_codes(tmp_path):
    line = one_line_error(crispml("run", "--data", "nope.csv", "--target", "y", cwd=tmp_path, module=True))
    assert line.startswith("crispml: error: data file nope.csv does not exist")
    assert crispml("--help", cwd=tmp_path, module=True).returncode == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_shows_fits_and_an_estimate_only_on_a_terminal(terminal):
    from pipeline.cli import ProgressPrinter

    stream = _Terminal() if terminal else io.StringIO()
    printer = ProgressPrinter(start=time.monotonic(), stream=stream)
    printer("modeling", "cross-validating a, b (4 fits)")
    printer("fit", "1/4 fits", 0.25)
    printer("fit", "2/4 fits", 0.5)
    printer("modeling", "a done: r2 0.9")
    text = stream.getvalue()
    assert "cross-validating" in text and "a done: r2 0.9" in text
    if terminal:
        assert "2/4 fits, about 0s left" in text and "\r\033[K" in text
        assert text.endswith("a done: r2 0.9\n")  # the live line is cleared before the next line
    else:
        assert "fits" not in text.replace("(4 fits)", "")  # plain output: no live line


def test_a_reader_that_closes_stdout_early_gets_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [str(CRISPML), "run", "--models", "baseline,linear", "--folds", "3"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    proc.stdout.close()  # like `| head` that has already stopped reading
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141, err.decode()
    assert b"Traceback" not in err and b"Exception ignored" not in err
    assert (tmp_path / "models" / "penguins" / "model" / "MLmodel").is_file()  # the work was done


def test_the_time_budget_counts_from_the_command_start(monkeypatch, capsys):
    from pipeline import cli, runner
    from pipeline.errors import EXIT_USAGE, UsageError

    seen = {}

    def stop_at_the_runner(config, progress, started=None):
        seen.update(started=started, entered=time.monotonic(), budget=config.modeling.time_budget)
        raise UsageError("stopped by the test")

    monkeypatch.setattr(runner, "run", stop_at_the_runner)
    before = time.monotonic()
    assert cli.main(["run", "--time-budget", "60"]) == EXIT_USAGE
    assert seen["budget"] == 60.0
    # The command's own clock, started before the config is read (and before importing the runner).
    assert seen["started"] is not None and before <= seen["started"] < seen["entered"]
    assert "stopped by the test" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "race"), [([], True), (["--no-race"], False)])
def test_racing_is_on_by_default_and_no_race_turns_it_off(monkeypatch, flags, race):
    from pipeline import cli, runner
    from pipeline.errors import EXIT_USAGE, UsageError

    seen = {}

    def stop_at_the_runner(config, progress, started=None):
        seen["race"] = config.modeling.race
        raise UsageError("stopped by the test")

    monkeypatch.setattr(runner, "run", stop_at_the_runner)
    assert cli.main(["run", *flags]) == EXIT_USAGE
    assert seen["race"] is race


def test_the_command_ends_with_mains_code_once_every_exit_handler_has_run_and_its_output_is_flushed(tmp_path):
    script = """
import atexit, sys
from pipeline import cli

def fake_main():
    atexit.register(lambda: print("exit handler ran", file=sys.stderr, flush=True))
    sys.stdout.write("written, not flushed")
    return 3

cli.main = fake_main
cli.entry()
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout to a pipe is then buffered
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "written, not flushed"  # flushed by the command before it ends the process
    assert proc.stderr == "exit handler ran\n"


def test_a_command_that_does_not_return_exits_the_usual_way(tmp_path):
    proc = crispml("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage: crispml" in proc.stdout
