"""Every way a user or an upstream job can hand crispml bad input: one line, a documented exit code, nothing changed.

One table, one row per bad input. Each case builds its files in a fresh folder, runs the
command line there, and checks the exit code, the key words of the one error line, that
no traceback was printed, and that no file was created, changed or removed (the inputs,
the working folder, a trained model). Most cases call `pipeline.cli.main` in this process,
which is what the `crispml` program runs; a selection also runs the real program in a
subprocess, to show that what reaches a user's terminal is the same single line.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import cli, runner
from pipeline.config import apply_overrides
from pipeline.errors import EXIT_OK, EXIT_USAGE
from pipeline.settings import Config

from conftest import REPO
from hostile import Setup, both, check_error, csv, labelled, raw

CRISPML = Path(sys.executable).parent / "crispml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Case:
    """One bad input: files to make, the command line, what the error line must say."""

    id: str
    args: tuple[str, ...]
    words: tuple[str, ...]
    setup: Setup = lambda tmp: None
    code: int = EXIT_USAGE
    needs_model: bool = False
    subprocess: bool = False


RUN = ("run", "--models", "baseline,linear", "--folds", "3", "--n-jobs", "1")
THREE_CLASSES = labelled().assign(label=lambda f: np.where(f.x1 > 0.5, "hi", np.where(f.x1 < -0.5, "lo", "mid")))
MIXED = labelled().assign(dose=lambda f: [str(i % 12) for i in range(len(f))])
MIXED.loc[[4, 11], "dose"] = ["unknown", "<5"]
NO_FEATURES = pd.DataFrame({"label": ["a", "b"] * 15, "const": 1, "row_id": range(30), "blank": np.nan})

CASES = [
    # --- the data file -------------------------------------------------------------------
    Case("missing file", (*RUN, "--data", "nope.csv", "--target", "label"), ("data file nope.csv does not exist", "--data"), subprocess=True),
    Case("folder, not a file", (*RUN, "--data", "folder.csv", "--target", "label"), ("is a folder, not a file",), lambda t: (t / "folder.csv").mkdir()),
    Case("unsupported extension", (*RUN, "--data", "data.xlsx", "--target", "label"), ("unsupported extension '.xlsx'", ".csv or .parquet"), raw("data.xlsx", "x")),
    Case("empty file", (*RUN, "--data", "empty.csv", "--target", "label"), ("is empty (0 bytes)",), raw("empty.csv", b"")),
    Case("header only", (*RUN, "--data", "h.csv", "--target", "label"), ("has a header but no data rows", "add rows"), raw("h.csv", "x1,label\n")),
    Case("ragged row", (*RUN, "--data", "r.csv", "--target", "label"), ("not a well-formed CSV", "Expected 2 fields in line 3, saw 3"), raw("r.csv", "x1,label\n1,a\n2,b,oops\n3,a\n")),
    Case("not UTF-8", (*RUN, "--data", "l1.csv", "--target", "label"), ("is not UTF-8 (byte 0xe9", "re-save it as UTF-8"), raw("l1.csv", "x1,label\n1,caf\xe9\n2,b\n".encode("latin-1"))),
    Case("duplicate column names", (*RUN, "--data", "d.csv", "--target", "label"), ("duplicate column names: x1", "rename them"), raw("d.csv", "x1,x1,label\n1,2,a\n3,4,b\n")),
    Case("corrupt parquet", (*RUN, "--data", "c.parquet", "--target", "label"), ("cannot be read as parquet",), raw("c.parquet", b"PAR1 not really")),
    # --- the target ----------------------------------------------------------------------
    Case("target absent", (*RUN, "--data", "t.csv", "--target", "lable"), ("column 'lable' named as target is not in t.csv", "did you mean 'label'?"), csv("t.csv", labelled())),
    Case("target all missing", (*RUN, "--data", "t.csv", "--target", "label"), ("target 'label'", "has no values (every row is missing)"), csv("t.csv", labelled().assign(label=np.nan))),
    Case("target constant", (*RUN, "--data", "t.csv", "--target", "label"), ("target 'label'", "is constant (every row is 'yes')", "choose another --target"), csv("t.csv", labelled().assign(label="yes"))),
    Case("target infinite", (*RUN, "--data", "t.csv", "--target", "x1"), ("target 'x1'", "has 1 infinite values (first at row 6)"), csv("t.csv", labelled().assign(x1=lambda f: f.x1.where(f.index != 5, np.inf)))),
    Case("continuous target, classification task", (*RUN, "--data", "t.csv", "--target", "x1", "--task", "binary"), ("looks continuous", "but the task is binary", "use --task regression"), csv("t.csv", labelled())),
    Case("text target, regression task", (*RUN, "--data", "t.csv", "--target", "label", "--task", "regression"), ("holds text (e.g. ", "but the task is regression", "--task binary"), csv("t.csv", labelled())),
    Case("three classes, binary task", (*RUN, "--data", "t.csv", "--target", "label", "--task", "binary"), ("has 3 classes but the task is binary", "--task multiclass"), csv("t.csv", THREE_CLASSES)),
    Case("a class with fewer rows than folds", (*RUN[:3], "--folds", "5", "--n-jobs", "1", "--data", "t.csv", "--target", "label"), ("class 'rare'", "fewer than the 5 folds", "use fewer folds (--folds 3)"), csv("t.csv", labelled().assign(label=lambda f: np.where(f.index < 4, "rare", f.label)))),
    Case("a class of one row", (*RUN, "--data", "t.csv", "--target", "label"), ("class 'rare'", "has only 1 row", "at least 2 rows"), csv("t.csv", labelled().assign(label=lambda f: np.where(f.index == 0, "rare", f.label)))),
    Case("fewer rows than folds", (*RUN[:3], "--folds", "10", "--n-jobs", "1", "--data", "t.csv", "--target", "x1"), ("only 8 training rows (after the holdout) for 10 folds", "--folds 8"), csv("t.csv", labelled(10))),
    # --- the features --------------------------------------------------------------------
    Case("all features dropped", (*RUN, "--data", "t.csv", "--target", "label"), ("no usable feature column", "'const': constant", "'row_id': ID-like", "'blank': empty"), csv("t.csv", NO_FEATURES)),
    Case("infinite feature values", (*RUN, "--data", "t.csv", "--target", "label"), ("column 'x2' has 2 infinite values (first at row 2: inf)", "leave the cells empty"), csv("t.csv", labelled().assign(x2=lambda f: f.x2.where(~f.index.isin([1, 7]), np.inf)))),
    Case("numbers mixed with text", (*RUN, "--data", "t.csv", "--target", "label"), ("column 'dose' mixes numbers and text", "'unknown'", "data.categorical"), csv("t.csv", MIXED)),
    Case("categorical names an absent column", ("run", "--config", "c.toml", "--data", "t.csv", "--target", "label"), ("data.categorical names colur", "did you mean 'colour'?"), both(csv("t.csv", labelled()), raw("c.toml", '[data]\ncategorical = ["colur"]\n'))),
    # --- the configuration and the command line ------------------------------------------
    Case("config unknown key", ("run", "--config", "c.toml"), ("unknown key 'fold' in [modeling]", "did you mean 'folds'?"), raw("c.toml", "[modeling]\nfold = 3\n"), subprocess=True),
    Case("config unknown section", ("run", "--config", "c.toml"), ("unknown section 'modelling'", "did you mean 'modeling'?"), raw("c.toml", "[modelling]\nfolds = 3\n")),
    Case("config wrong type", ("run", "--config", "c.toml"), ("modeling.folds must be int, got str 'five'",), raw("c.toml", '[modeling]\nfolds = "five"\n')),
    Case("config not TOML", ("run", "--config", "c.toml"), ("is not valid TOML", "fix the syntax"), raw("c.toml", "[modeling\nfolds = 3\n")),
    Case("config file missing", ("run", "--config", "nope.toml"), ("config file nope.toml does not exist",)),
    Case("unknown model", (*RUN[:2], "linear,random_forrest"), ("unknown model 'random_forrest'", "did you mean 'random_forest'?")),
    Case("unknown metric", (*RUN, "--metric", "acuracy"), ("business.metric 'acuracy' is unknown", "did you mean 'accuracy'?")),
    Case("metric unfit for the named task", (*RUN, "--task", "regression", "--metric", "roc_auc"), ("business.metric 'roc_auc' does not fit a regression task", "r2")),
    Case("metric unfit for the detected task", (*RUN, "--metric", "r2"), ("metric 'r2' does not fit a multiclass task", "balanced_accuracy")),
    Case("holdout out of range", (*RUN, "--holdout", "1.5"), ("preparation.holdout must be between 0 and 1", "got 1.5")),
    Case("negative candidate timeout", (*RUN, "--candidate-timeout", "-1"), ("modeling.candidate_timeout must be 0 (no limit) or a number of seconds", "got -1.0")),
    Case("unknown option", ("run", "--bogus"), ("unrecognized arguments: --bogus", "crispml --help"), subprocess=True),
    Case("bad option value", ("run", "--folds", "three"), ("invalid int value: 'three'",)),
    Case("--data without --target", ("run", "--data", "t.csv"), ("--data t.csv needs --target",), csv("t.csv", labelled())),
    Case("no command", (), ("no command given",)),
    # --- the tracking store (more in test_faults.py) ---------------------------------------
    Case("store URI with an unknown scheme", (*RUN, "--tracking-uri", "sqlit:///mlruns/mlflow.db"), ("unknown scheme 'sqlit'", "did you mean 'sqlite'?")),
    Case("store server unreachable", (*RUN, "--tracking-uri", f"http://127.0.0.1:{_free_port()}"), ("cannot reach the MLflow tracking server", "Connection refused")),
    Case("store folder cannot be created", (*RUN, "--tracking-uri", "sqlite:////proc/crispml/mlflow.db"), ("cannot create the tracking folder /proc/crispml",)),
    # --- scoring -------------------------------------------------------------------------
    Case("predict: no model there", ("predict", "--model", "no/such/dir", "--data", "t.csv", "--out", "o.csv"), ("no model at no/such/dir",), csv("t.csv", labelled())),
    Case("predict: a column missing", ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "o.csv"), ("lacks 1 column(s) the model needs: colour",), csv("s.csv", labelled().drop(columns=["label", "colour"])), needs_model=True, subprocess=True),
    Case("predict: text in a numeric column", ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "o.csv"), ("column 'x2' must be numeric (it was float64 in training)", "holds 'heavy' (row 3"), csv("s.csv", labelled().astype({"x2": object}).assign(x2=lambda f: f.x2.where(f.index != 2, "heavy")).drop(columns="label")), needs_model=True),
    Case("predict: an infinite value", ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "o.csv"), ("column 'x1' of the data to score holds an infinite value (row 1",), csv("s.csv", labelled().assign(x1=np.inf)), needs_model=True),
    Case("predict: output exists", ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "o.csv"), ("output o.csv already exists", "--overwrite"), both(csv("s.csv", labelled()), raw("o.csv", "precious\n")), needs_model=True),
    Case("predict: output is the input", ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "s.csv", "--overwrite"), ("--out s.csv is the input file",), csv("s.csv", labelled()), needs_model=True),
    Case("predict: unsupported output", ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "o.json"), ("output o.json has an unsupported extension",), csv("s.csv", labelled()), needs_model=True),
    Case("predict: a folder without a manifest", ("predict", "--model", "bare", "--data", "s.csv", "--out", "o.csv"), ("bare has no manifest.json", "not a complete crispml export"), both(csv("s.csv", labelled()), lambda t: (t / "bare").mkdir(), raw("bare/MLmodel", "flavors: {}\n"))),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on `labelled()` (baseline and linear, in this process), exported to a folder."""
    tmp = tmp_path_factory.mktemp("trained")
    labelled().to_csv(tmp / "train.csv", index=False)
    config = apply_overrides(
        Config(),
        {
            "data.path": str(tmp / "train.csv"),
            "business.target": "label",
            "modeling.models": ["baseline", "linear"],
            "modeling.folds": 3,
            "modeling.n_jobs": 1,
            "modeling.candidate_timeout": 0.0,
            "tracking.uri": f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
            "deployment.out": str(tmp / "models"),
        },
    )
    result = runner.run(config)
    assert result.export_dir is not None
    return result.export_dir


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under the roots, by path, with its SHA-256: what must not change."""
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                files[str(path)] = "<dir>"
    return files


def prepare(case: Case, tmp: Path, request: pytest.FixtureRequest) -> list[str]:
    case.setup(tmp)
    if not case.needs_model:
        return list(case.args)
    model = request.getfixturevalue("model_dir")
    return [str(model) if a == "MODEL" else a for a in case.args]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_a_documented_exit_code(case, tmp_path, monkeypatch, capsys, request):
    args = prepare(case, tmp_path, request)
    watched = [tmp_path, REPO / "data"] + ([request.getfixturevalue("model_dir")] if case.needs_model else [])
    before = snapshot(*watched)
    monkeypatch.chdir(tmp_path)
    code = cli.main(args)
    check_error(code, capsys.readouterr().err, case)
    assert snapshot(*watched) == before  # nothing created, changed or removed


@pytest.mark.slow
# A few cases of each kind (data, usage, config, predict) as a real process: every case runs in-process above.
@pytest.mark.parametrize("case", [c for c in CASES if c.subprocess], ids=[c.id for c in CASES if c.subprocess])
def test_what_reaches_the_terminal_is_the_same_one_line(case, tmp_path, request):
    args = prepare(case, tmp_path, request)
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [str(CRISPML), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    check_error(proc.returncode, proc.stderr, case)
    assert proc.stdout == ""
    assert snapshot(tmp_path) == before


def test_the_table_covers_at_least_thirty_bad_inputs():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


# --- input that is odd but usable: scored or trained on, with a warning that says what was done ---


@dataclass(frozen=True)
class WarningCase:
    id: str
    args: tuple[str, ...]
    warnings: tuple[str, ...]
    setup: Setup = field(default=lambda tmp: None)
    needs_model: bool = False


def messy(n: int = 200) -> pd.DataFrame:
    """`labelled(n)` as files come: '?' and thousands separators, a ticket code, a date, a key, padded labels."""
    rng = np.random.default_rng(1)
    return labelled(n).assign(
        x2=lambda f: [("?" if i % 10 == 0 else f"{v * 1000:,.0f}") for i, v in enumerate(f.x2.fillna(5.0))],
        ticket=[str(113000 + i // 2) if i % 4 else f"A/5 {21000 + i // 2}" for i in range(n)],
        visit=[f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
        ref=rng.permutation(np.arange(5000, 5000 + n + 50))[:n],
        label=lambda f: [v + (" " if i % 3 == 0 else "") for i, v in enumerate(f.label)],
    )


WARNING_CASES = [
    WarningCase(
        "a file as it comes: markers, separators, codes, dates and keys are read, with counts",
        (*RUN, "--data", "t.csv", "--target", "label"),
        (
            "read 20 cells as missing (markers such as '?'",
            "'label' 67",
            "read 162 cells with thousands separators as numbers: 'x2' 162",  # the other 18 are below 1,000
            "column 'ticket' mixes numbers and text (150 numbers such as '113000'",
            "date column 'visit' became calendar features visit_year, visit_month, visit_dayofweek",
            "column 'ref' is dropped as ID-like by its values",
        ),
        csv("t.csv", messy()),
    ),
    WarningCase(
        "predict: markers and padded text in the data to score are read as in training",
        ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "o.csv"),
        ("read 1 cells as missing (markers such as '?'", "stripped spaces around 2 text cells (e.g. ' red')"),
        csv("s.csv", labelled().astype({"x2": object}).assign(x2=lambda f: f.x2.where(f.index != 4, "?"), note="kept", colour=lambda f: f.colour.where(~f.index.isin([0, 1]), " red"))),
        needs_model=True,
    ),
    WarningCase(
        "rows with a missing target are dropped and counted",
        (*RUN, "--data", "t.csv", "--target", "label"),
        ("3 rows with a missing target 'label' are dropped",),
        csv("t.csv", labelled().assign(label=lambda f: f.label.where(~f.index.isin([0, 1, 2])))),
    ),
    WarningCase(
        "a high-cardinality text column is grouped",
        (*RUN, "--data", "t.csv", "--target", "label"),
        ("column 'city' has", "high cardinality", "grouped as 'infrequent'"),
        csv("t.csv", labelled(200).assign(city=lambda f: [f"c{i % 90}" for i in range(len(f))])),
    ),
    WarningCase(
        "predict: extra columns, unseen categories and out-of-range values are scored and reported",
        ("predict", "--model", "MODEL", "--data", "s.csv", "--out", "o.csv"),
        (
            "not model inputs and are ignored for scoring: label, note",
            "drift: column 'colour' has 2 of 60 rows with a category not seen in training (e.g. 'purple')",
            "drift: column 'x2' has 1 of 60 rows outside the training range",
        ),
        csv(
            "s.csv",
            labelled().assign(
                note="kept", colour=lambda f: f.colour.where(~f.index.isin([5, 6]), "purple"), x2=lambda f: f.x2.where(f.index != 8, 1e6)
            ),
        ),
        needs_model=True,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", WARNING_CASES, ids=[c.id for c in WARNING_CASES])
def test_odd_but_usable_input_goes_through_with_a_warning(case, tmp_path, monkeypatch, capsys, request):
    case.setup(tmp_path)
    model = request.getfixturevalue("model_dir") if case.needs_model else None
    args = [str(model) if a == "MODEL" else a for a in case.args]
    monkeypatch.chdir(tmp_path)
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("crispml: warning: ")]
    for words in case.warnings:
        assert any(words in w for w in warnings), err
    if case.needs_model:
        scored = pd.read_csv(tmp_path / "o.csv")
        source = pd.read_csv(tmp_path / "s.csv")
        assert len(scored) == len(source) and (scored["note"] == source["note"]).all()  # every row, in order
