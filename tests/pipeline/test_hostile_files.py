"""Hostile data files, scored output and option values (issue 15): nested and binary Parquet columns, separators,
compression, paths that are not regular files, config encodings, numbers out of range, chunked type guesses,
`predict --out` paths and output columns the input already has."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import signal
import socket
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import cli, runner, scoring
from pipeline.config import SEED_MAX, apply_overrides, load_config
from pipeline.errors import EXIT_OK, ConfigError, DataError, UsageError
from pipeline.files import read_table, write_table
from pipeline.settings import Config

from hostile import RUN, Hostile, both, csv, labelled, raw, run_case

Setup = Callable[[Path], None]
TRAIN = (*RUN, "--data", "d.csv", "--target", "label")
DATA = csv("d.csv", labelled())
NOTHING = ()
"""`may_write` of a case that must write nothing at all (no store, no export, no output)."""


def predict(data: str, out: str, *extra: str) -> tuple[str, ...]:
    return ("predict", "--model", "MODEL", "--data", data, "--out", out, *extra)


def text_of(frame: pd.DataFrame, sep: str = ",") -> str:
    return frame.to_csv(index=False, sep=sep)


def with_nested(frame: pd.DataFrame) -> pa.Table:
    """`frame` with a list, a struct, a map and a binary column, and its `colour` stored as UTF-8 bytes."""
    n = len(frame)
    table = pa.Table.from_pandas(frame.drop(columns="colour"), preserve_index=False)
    columns = {
        "colour": pa.array([c.encode() for c in frame["colour"]], pa.binary()),
        "tags": pa.array([[i % 3, i % 5] for i in range(n)], pa.list_(pa.int64())),
        "meta": pa.array([{"a": i % 4, "b": "xy"[i % 2]} for i in range(n)]),
        "attrs": pa.array([[("k", i % 7)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
        "blob": pa.array([bytes([255, i % 256]) for i in range(n)], pa.binary()),
    }
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def parquet(name: str, table: pa.Table) -> Setup:
    return lambda work: pq.write_table(table, work / name)


def target_of(kind: str) -> pa.Table:
    """`labelled()` whose target is a nested or binary column."""
    frame = labelled()
    labels = {
        "list": pa.array([[v] for v in frame["label"]]),
        "struct": pa.array([{"v": v} for v in frame["label"]]),
        "binary": pa.array([bytes([255]) + v.encode() for v in frame["label"]], pa.binary()),
    }[kind]
    table = pa.Table.from_pandas(frame.drop(columns="label"), preserve_index=False)
    return table.append_column("label", labels)


def fifo(name: str) -> Setup:
    return lambda work: os.mkfifo(work / name)


def link(name: str, to: str) -> Setup:
    return lambda work: os.symlink(to, work / name)


def unix_socket(name: str) -> Setup:
    def run(work: Path) -> None:
        here = os.getcwd()
        os.chdir(work)  # a relative name keeps the socket's path short (108 bytes at most)
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(name)
            sock.close()
        finally:
            os.chdir(here)

    return run


def folder(name: str) -> Setup:
    return lambda work: (work / name).mkdir(parents=True)


def wide_mixed(n_numbers: int = 1100, n_text: int = 20, width: int = 1024) -> str:
    """`labelled()`-like rows plus a `code` column that holds numbers for `n_numbers` rows and text after,
    in a table `width` columns wide: pandas' chunked reader guesses per chunk of 2**20 / width rows."""
    n = n_numbers + n_text
    frame = labelled(n)
    frame.insert(0, "code", [str(i) for i in range(n_numbers)] + [f"T{i}" for i in range(n_text)])
    filler = pd.DataFrame(np.zeros((n, width - frame.shape[1]), dtype=np.int8), columns=[f"f{i}" for i in range(width - frame.shape[1])])
    return text_of(pd.concat([frame, filler], axis=1))


GZIP = gzip.compress(text_of(labelled()).encode())

CASES = [
    # Class 1: a nested or binary Parquet column as the target (as a feature it is dropped: see the tests below).
    Hostile("target-list", (*RUN, "--data", "n.parquet", "--target", "label"), ("target 'label'", "nested or binary values (lists)", "--target"), parquet("n.parquet", target_of("list"))),
    Hostile("target-struct", (*RUN, "--data", "n.parquet", "--target", "label"), ("target 'label'", "(structs or maps)", "--target"), parquet("n.parquet", target_of("struct"))),
    Hostile("target-binary", (*RUN, "--data", "n.parquet", "--target", "label"), ("target 'label'", "bytes that are not UTF-8 text", "--target"), parquet("n.parquet", target_of("binary"))),
    # Class 2: a separator other than the comma, when the rows do not split evenly on it.
    Hostile("semicolon-ragged", (*RUN, "--data", "s.csv", "--target", "label"), ("not a well-formed CSV", "seems to use ';' as its separator", "as many fields as the header"), raw("s.csv", "x1;x2;label\n" + "1;2;a\n2;3;b;c\n" * 20)),
    Hostile("tab-ragged", (*RUN, "--data", "s.tsv", "--target", "label"), ("seems to use tab as its separator",), raw("s.tsv", "x1\tx2\tlabel\n" + "1\t2\ta\n2\t3\tb\tc\n" * 20)),
    Hostile("semicolon-without-the-target", (*RUN, "--data", "s.csv", "--target", "y"), ("column 'y' named as target is not in s.csv", "(columns: x1, x2, colour, label)"), raw("s.csv", text_of(labelled(), sep=";"))),
    # Class 3: compressed content, damaged or of a kind crispml does not read; a file that is not what its name says.
    Hostile("gzip-cut-short", (*RUN, "--data", "c.csv.gz", "--target", "label"), ("is gzip-compressed but cannot be decompressed", "damaged or cut short"), raw("c.csv.gz", GZIP[: len(GZIP) // 2])),
    Hostile("gzip-magic-junk-named-csv", (*RUN, "--data", "c.csv", "--target", "label"), ("c.csv is gzip-compressed but cannot be decompressed",), raw("c.csv", b"\x1f\x8b" + b"junk" * 50)),
    Hostile("bz2-corrupt", (*RUN, "--data", "c.csv.bz2", "--target", "label"), ("is bz2-compressed but cannot be decompressed",), raw("c.csv.bz2", b"BZh9" + b"\x00" * 64)),
    Hostile("xz-corrupt", (*RUN, "--data", "c.csv.xz", "--target", "label"), ("is xz-compressed but cannot be decompressed",), raw("c.csv.xz", lzma.compress(text_of(labelled()).encode())[:40])),
    Hostile("zip-of-two-files", (*RUN, "--data", "c.csv.zip", "--target", "label"), ("is a zip archive of 2 files", "exactly one"), lambda w: _zip(w / "c.csv.zip", "a.csv", "b.csv")),
    Hostile("zip-corrupt", (*RUN, "--data", "c.csv.zip", "--target", "label"), ("is zip-compressed but cannot be decompressed",), raw("c.csv.zip", b"PK\x03\x04" + b"\x00" * 40)),
    Hostile("zstd-content", (*RUN, "--data", "c.csv", "--target", "label"), ("is zstd-compressed, which crispml does not read", "zstd -d"), raw("c.csv", b"(\xb5/\xfd" + b"\x00" * 40)),
    Hostile("csv-named-parquet", (*RUN, "--data", "c.parquet", "--target", "label"), ("cannot be read as parquet", "does not start with Parquet's magic bytes PAR1 (it looks like text)", "name a CSV file .csv"), raw("c.parquet", text_of(labelled()))),
    Hostile("gzip-named-parquet", (*RUN, "--data", "c.parquet", "--target", "label"), ("cannot be read as parquet", "(it is gzip-compressed)"), raw("c.parquet", GZIP)),
    Hostile("gzip-of-latin-1", (*RUN, "--data", "c.csv.gz", "--target", "label"), ("is not UTF-8 (byte 0xe9", "re-save it as UTF-8"), raw("c.csv.gz", gzip.compress("x1,label\n1,caf\xe9\n".encode("latin-1")))),
    # Class 4: --data and --config that are not regular files; no case may hang or read without end.
    Hostile("data-folder", (*RUN, "--data", "d.csv", "--target", "label"), ("data file d.csv is a folder, not a file",), folder("d.csv")),
    Hostile("data-fifo", (*RUN, "--data", "d.csv", "--target", "label"), ("data file d.csv is a named pipe (FIFO), not a regular file", "--data"), fifo("d.csv")),
    Hostile("data-dev-zero", (*RUN, "--data", "/dev/zero", "--target", "label"), ("data file /dev/zero is a character device, not a regular file",)),
    Hostile("data-link-to-dev-zero", (*RUN, "--data", "z.csv", "--target", "label"), ("data file z.csv is a character device",), link("z.csv", "/dev/zero")),
    Hostile("data-socket", (*RUN, "--data", "s.csv", "--target", "label"), ("data file s.csv is a socket, not a regular file",), unix_socket("s.csv")),
    Hostile("data-broken-link", (*RUN, "--data", "d.csv", "--target", "label"), ("data file d.csv is a symbolic link to gone.csv, which does not exist",), link("d.csv", "gone.csv")),
    Hostile("data-link-loop", (*RUN, "--data", "d.csv", "--target", "label"), ("data file d.csv is a symbolic link loop",), link("d.csv", "d.csv")),
    Hostile("data-under-a-file", (*RUN, "--data", "f.txt/d.csv", "--target", "label"), ("does not exist: f.txt is a file, not a folder",), raw("f.txt", "mine\n")),
    Hostile("data-misspelt", (*RUN, "--data", "dta.csv", "--target", "label"), ("data file dta.csv does not exist; did you mean 'd.csv'?",), DATA),
    Hostile("data-dev-null", (*RUN, "--data", "/dev/null", "--target", "label"), ("/dev/null is a character device",)),
    Hostile("config-folder", ("run", "--config", "c.toml"), ("config file c.toml is a folder, not a file", "--config"), folder("c.toml")),
    Hostile("config-fifo", ("run", "--config", "c.toml"), ("config file c.toml is a named pipe (FIFO)", "--config"), fifo("c.toml")),
    Hostile("config-dev-zero", ("run", "--config", "/dev/zero"), ("config file /dev/zero is a character device",)),
    Hostile("config-socket", ("run", "--config", "c.toml"), ("config file c.toml is a socket",), unix_socket("c.toml")),
    Hostile("config-broken-link", ("run", "--config", "c.toml"), ("config file c.toml is a symbolic link to gone.toml, which does not exist",), link("c.toml", "gone.toml")),
    Hostile("config-link-loop", ("run", "--config", "c.toml"), ("config file c.toml is a symbolic link loop",), link("c.toml", "c.toml")),
    # Class 5: a config that is not UTF-8, or far too large to be one (a byte-order mark is read: see below).
    Hostile("config-latin-1", ("run", "--config", "c.toml"), ("config file c.toml is not UTF-8 (byte 0xe9 at offset 27)", "re-save it as UTF-8"), raw("c.toml", '[business]\nobjective = "caf\xe9"\n'.encode("latin-1"))),
    Hostile("config-utf-16", ("run", "--config", "c.toml"), ("config file c.toml is not UTF-8",), raw("c.toml", "seed = 1\n".encode("utf-16"))),
    Hostile("config-huge", ("run", "--config", "c.toml"), ("is larger than 1 MiB", "--config"), raw("c.toml", "# " + "x" * (1 << 20) + "\n")),
    # Class 6: option values out of range: one line with the valid range, before anything is read or written.
    Hostile("seed-negative", (*TRAIN, "--seed", "-1"), (f"seed must be between 0 and {SEED_MAX}", "got -1"), DATA, may_write=NOTHING),
    Hostile("seed-too-large", (*TRAIN, "--seed", str(2**32)), (f"seed must be between 0 and {SEED_MAX}", f"got {2**32}"), DATA, may_write=NOTHING),
    Hostile("seed-negative-in-config", ("run", "--config", "c.toml"), ("seed must be between 0", "got -5"), raw("c.toml", "seed = -5\n"), may_write=NOTHING),
    Hostile("folds-zero", (*TRAIN[:4], "0", *TRAIN[5:]), ("modeling.folds must be at least 2, got 0",), DATA, may_write=NOTHING),
    Hostile("folds-one", (*TRAIN[:4], "1", *TRAIN[5:]), ("modeling.folds must be at least 2, got 1",), DATA, may_write=NOTHING),
    Hostile("folds-huge", (*TRAIN[:4], str(10**9), *TRAIN[5:]), ("training rows (after the holdout) for 1000000000 folds", "use fewer folds"), DATA, may_write=NOTHING),
    Hostile("n-jobs-zero", (*TRAIN, "--n-jobs", "0"), ("modeling.n_jobs must not be 0", "-1 for every core"), DATA, may_write=NOTHING),
    Hostile("time-budget-negative", (*TRAIN, "--time-budget", "-1"), ("modeling.time_budget must be 0 (no budget) or a number of seconds, got -1.0",), DATA, may_write=NOTHING),
    Hostile("time-budget-infinite", (*TRAIN, "--time-budget", "inf"), ("modeling.time_budget must be 0", "got inf"), DATA, may_write=NOTHING),
    Hostile("candidate-timeout-nan", (*TRAIN, "--candidate-timeout", "nan"), ("modeling.candidate_timeout must be 0 (no limit)", "got nan"), DATA, may_write=NOTHING),
    Hostile("holdout-zero", (*TRAIN, "--holdout", "0"), ("preparation.holdout must be between 0 and 1", "got 0.0"), DATA, may_write=NOTHING),
    Hostile("holdout-one", (*TRAIN, "--holdout", "1"), ("preparation.holdout must be between 0 and 1", "got 1.0"), DATA, may_write=NOTHING),
    Hostile("holdout-tiny", (*TRAIN, "--holdout", "1e-300"), ("cannot split 60 labelled rows into a 0% holdout", "change --holdout"), DATA, may_write=NOTHING),
    Hostile("memory-limit-huge", ("run", "--config", "c.toml"), ("modeling.candidate_memory_mb must be 0 (automatic) or a number of MiB up to",), raw("c.toml", "[modeling]\ncandidate_memory_mb = 10000000000000\n"), may_write=NOTHING),
    Hostile("max-categories-one", ("run", "--config", "c.toml"), ("preparation.max_categories must be at least 2, got 1",), raw("c.toml", "[preparation]\nmax_categories = 1\n"), may_write=NOTHING),
    # Class 8: a --out of predict that cannot be the scored file: one line, nothing written, not even a folder.
    Hostile("out-is-a-folder", predict("s.csv", "o.csv"), ("--out o.csv is a folder", "name a file in it"), both(csv("s.csv", labelled()), folder("o.csv")), needs_model=True, may_write=NOTHING),
    Hostile("out-is-a-folder-with-overwrite", predict("s.csv", "o.csv", "--overwrite"), ("--out o.csv is a folder",), both(csv("s.csv", labelled()), folder("o.csv")), needs_model=True, may_write=NOTHING),
    Hostile("out-under-a-file", predict("s.csv", "f.txt/o.csv"), ("--out f.txt/o.csv lies under f.txt, which is a file, not a folder",), both(csv("s.csv", labelled()), raw("f.txt", "mine\n")), needs_model=True, may_write=NOTHING),
    Hostile("out-deep-under-a-file", predict("s.csv", "f.txt/a/b/o.parquet"), ("lies under f.txt, which is a file",), both(csv("s.csv", labelled()), raw("f.txt", "mine\n")), needs_model=True, may_write=NOTHING),
    Hostile("out-under-a-broken-link", predict("s.csv", "gone/o.csv"), ("lies under gone, which is a broken symbolic link",), both(csv("s.csv", labelled()), link("gone", "nowhere")), needs_model=True, may_write=NOTHING),
    Hostile("out-is-a-fifo", predict("s.csv", "o.csv", "--overwrite"), ("--out o.csv is not a regular file", "will not replace"), both(csv("s.csv", labelled()), fifo("o.csv")), needs_model=True, may_write=NOTHING),
    Hostile(  # the folders --out needs are made only when the rows are written: a failed predict leaves none
        "out-in-new-folders-when-scoring-fails", predict("s.csv", "new/deep/o.csv"), ("lacks 1 column(s) the model needs: colour",),
        csv("s.csv", labelled().drop(columns="colour")), needs_model=True, may_write=NOTHING,
    ),
    # Class 9: input columns named like the ones scoring adds: refused before anything is written.
    Hostile("input-has-prediction", predict("s.csv", "o.csv"), ("already has 1 column(s) named like the columns scoring adds: prediction", "rename or drop them"), csv("s.csv", labelled().assign(prediction="mine")), needs_model=True, may_write=NOTHING),
    Hostile("input-has-proba", predict("s.csv", "o.parquet"), ("proba_yes", "rename or drop them", "adds prediction, proba_no, proba_yes"), csv("s.csv", labelled().assign(proba_yes=0.5)), needs_model=True, may_write=NOTHING),
    Hostile("input-has-both", predict("s.csv", "o.csv"), ("2 column(s)", "prediction, proba_no"), csv("s.csv", labelled().assign(proba_no=1.0, prediction=0)), needs_model=True, may_write=NOTHING),
]
SPECIAL = {"data-fifo", "data-dev-zero", "data-link-to-dev-zero", "data-socket", "config-fifo", "config-dev-zero", "config-socket", "out-is-a-fifo"}


def _zip(path: Path, *names: str) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, text_of(labelled()))


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail, instead of hanging the suite, when a case blocks (a pipe opened for reading waits for a writer)."""

    def fail(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: something blocked")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _train(folder: Path, data: Path, target: str = "label") -> runner.RunResult:
    config = apply_overrides(
        Config(),
        {
            "data.path": str(data),
            "business.target": target,
            "modeling.models": ["baseline", "linear"],
            "modeling.folds": 3,
            "modeling.n_jobs": 1,
            "modeling.candidate_timeout": 0.0,
            "tracking.uri": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
            "deployment.out": str(folder / "models"),
        },
    )
    return runner.run(config)


@pytest.fixture(scope="module")
def nested_run(tmp_path_factory: pytest.TempPathFactory) -> runner.RunResult:
    """A model trained on a Parquet file with list, struct, map and binary columns and its `colour` as UTF-8 bytes."""
    tmp = tmp_path_factory.mktemp("nested")
    pq.write_table(with_nested(labelled()), tmp / "train.parquet")
    result = _train(tmp, tmp / "train.parquet")
    assert result.export_dir is not None
    return result


@pytest.fixture(scope="module")
def model_dir(nested_run: runner.RunResult) -> Path:
    return nested_run.export_dir


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_files(case, tmp_path, capsys, monkeypatch, request):
    model = request.getfixturevalue("model_dir") if case.needs_model else None
    with _deadline(120) if case.id in SPECIAL else contextlib.nullcontext():
        run_case(case, tmp_path, model, cli.main, capsys, monkeypatch)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its permissions")
@pytest.mark.parametrize("flag", ["--data", "--config"])
def test_an_unreadable_file_says_permission_denied(flag, tmp_path, capsys, monkeypatch):
    name = "d.csv" if flag == "--data" else "c.toml"

    def unreadable(work: Path) -> None:
        (work / name).write_text(text_of(labelled()) if flag == "--data" else "seed = 1\n")
        os.chmod(work / name, 0)

    case = Hostile(f"unreadable {flag}", (*RUN, flag, name, "--target", "label"), ("cannot be read (permission denied)", "check its permissions"), unreadable)
    run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)


# --- class 1: nested and binary columns are left out of training with a warning, passed through by predict ----------


def test_nested_and_binary_columns_are_dropped_with_a_warning_naming_each(nested_run):
    profile = nested_run.profile
    assert set(profile.features) == {"x1", "x2", "colour"}  # colour was UTF-8 bytes: read as text, used
    for column, what in (("tags", "lists"), ("meta", "structs or maps"), ("attrs", "lists"), ("blob", "bytes that are not UTF-8 text")):
        assert what in profile.dropped[column]
        assert any(w.startswith(f"column '{column}' is dropped: nested or binary values") for w in profile.warnings), profile.warnings


def test_bytes_that_are_utf8_are_read_as_text_and_other_bytes_stay_bytes(tmp_path):
    pq.write_table(with_nested(labelled()), tmp_path / "n.parquet")
    frame = read_table(tmp_path / "n.parquet")
    assert isinstance(frame["colour"].dtype, pd.StringDtype)
    assert frame["colour"].tolist() == labelled()["colour"].tolist()
    assert frame["blob"].map(type).eq(bytes).all()


@pytest.mark.parametrize("out", ["o.csv", "o.parquet"])
def test_predict_passes_nested_columns_through_to_csv_and_parquet(out, model_dir, tmp_path, capsys, monkeypatch):
    pq.write_table(with_nested(labelled()), tmp_path / "s.parquet")
    labelled().to_csv(tmp_path / "plain.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["predict", "--model", str(model_dir), "--data", "s.parquet", "--out", out]) == EXIT_OK
    assert cli.main(["predict", "--model", str(model_dir), "--data", "plain.csv", "--out", "plain_" + out]) == EXIT_OK
    err = capsys.readouterr().err
    assert "Traceback" not in err and "are not model inputs and are ignored for scoring" in err
    scored, plain = read_table(tmp_path / out), read_table(tmp_path / ("plain_" + out))
    assert {"tags", "meta", "attrs", "blob", "prediction", "proba_yes"} <= set(scored.columns)
    assert scored["prediction"].tolist() == plain["prediction"].tolist()
    np.testing.assert_allclose(scored["proba_yes"], plain["proba_yes"])


# --- classes 2 and 3: separators and compression, read the same as the plain comma file -----------------------------


def _same_as_plain(frame: pd.DataFrame) -> None:
    expected = labelled()
    pd.testing.assert_frame_equal(frame, pd.read_csv(io.StringIO(text_of(expected))), check_dtype=False, rtol=1e-12)


@pytest.mark.parametrize(
    "name, content",
    [
        ("semicolon.csv", text_of(labelled(), ";")),
        ("tab.csv", text_of(labelled(), "\t")),
        ("pipe.csv", text_of(labelled(), "|")),
        ("tab.tsv", text_of(labelled(), "\t")),
        ("semicolon.txt", text_of(labelled(), ";")),
        ("bom.csv", "\ufeff" + text_of(labelled())),
        ("crlf.csv", text_of(labelled()).replace("\n", "\r\n")),
    ],
)
def test_separators_are_detected(name, content, tmp_path):
    (tmp_path / name).write_text(content, encoding="utf-8", newline="")
    _same_as_plain(read_table(tmp_path / name))


def test_decimal_commas_in_a_semicolon_file_are_decimals_not_thousands(tmp_path):
    (tmp_path / "s.csv").write_text(
        "x;y;z;label;code\n1,5;1.234,5;?;a;A1\n-0,25;2;2,5;b;1,5\n1,500;3;3,75;a;B2\n", encoding="utf-8"
    )
    frame = read_table(tmp_path / "s.csv")
    assert frame["x"].tolist() == [1.5, -0.25, 1.5]  # 1,500 is one and a half, not fifteen hundred
    assert frame["y"].tolist() == [1234.5, 2.0, 3.0]
    assert frame["z"].tolist()[1:] == ["2.5", "3.75"] and frame["z"].iloc[0] == "?"  # the data step reads '?' as missing
    assert frame["label"].tolist() == ["a", "b", "a"] and frame["code"].tolist() == ["A1", "1.5", "B2"]


def test_a_comma_file_with_semicolons_in_its_text_stays_a_comma_file(tmp_path):
    frame = labelled().assign(note=lambda f: [f"a;b;{i}" for i in range(len(f))])
    (tmp_path / "c.csv").write_text(text_of(frame), encoding="utf-8")
    assert read_table(tmp_path / "c.csv").columns.tolist() == frame.columns.tolist()


def test_predict_reads_a_semicolon_file_with_decimal_commas_as_training_read_the_comma_file(model_dir, tmp_path):
    frame = labelled()
    (tmp_path / "s.csv").write_text(text_of(frame, ";").replace(".", ","), encoding="utf-8")  # every decimal point a comma
    frame.to_csv(tmp_path / "c.csv", index=False)
    scoring.predict(str(model_dir), tmp_path / "s.csv", tmp_path / "s_out.csv", f"sqlite:///{tmp_path / 'unused.db'}", False)
    scoring.predict(str(model_dir), tmp_path / "c.csv", tmp_path / "c_out.csv", f"sqlite:///{tmp_path / 'unused.db'}", False)
    semi, comma = pd.read_csv(tmp_path / "s_out.csv"), pd.read_csv(tmp_path / "c_out.csv")
    np.testing.assert_allclose(semi["proba_yes"], comma["proba_yes"], rtol=1e-9)


def _compressed(kind: str, data: bytes) -> bytes:
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("inner.csv", data)
        return buffer.getvalue()
    return {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](data)


@pytest.mark.parametrize("kind, suffix", [("gzip", ".gz"), ("bz2", ".bz2"), ("xz", ".xz"), ("zip", ".zip")])
@pytest.mark.parametrize("named", ["as-compressed", "as-plain-csv"])
def test_compressed_csv_is_read_whatever_its_name(kind, suffix, named, tmp_path):
    name = f"d.csv{suffix}" if named == "as-compressed" else "d.csv"
    (tmp_path / name).write_bytes(_compressed(kind, text_of(labelled(), ";").encode()))
    _same_as_plain(read_table(tmp_path / name))


def test_a_parquet_file_named_csv_is_read_as_parquet(tmp_path):
    labelled().to_parquet(tmp_path / "d.csv")
    _same_as_plain(read_table(tmp_path / "d.csv"))


# --- class 5: a byte-order mark in a config -------------------------------------------------------------------------


def test_a_config_with_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbfseed = 7\n[business]\ntarget = \"label\"\n")
    config = load_config(tmp_path / "c.toml")
    assert config.seed == 7 and config.business.target == "label"


def test_a_config_with_a_byte_order_mark_names_the_target_for_data_given_on_the_command_line(tmp_path, capsys, monkeypatch):
    """`--data` without `--target` is fine when the config names the target, with or without a byte-order mark."""
    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbf[business]\ntarget = \"nope\"\n")
    labelled().to_csv(tmp_path / "d.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main([*RUN, "--config", "c.toml", "--data", "d.csv"]) == 2
    assert "column 'nope' named as target is not in d.csv" in capsys.readouterr().err  # not "--data needs --target"


@pytest.mark.parametrize("seed, ok", [(0, True), (SEED_MAX, True), (-1, False), (SEED_MAX + 1, False)])
def test_seed_range_is_numpys(seed, ok):
    if ok:
        assert apply_overrides(Config(), {"seed": seed}).seed == seed
        np.random.default_rng(seed)  # and numpy takes it
        np.random.RandomState(seed)
    else:
        with pytest.raises(ConfigError, match=f"seed must be between 0 and {SEED_MAX}"):
            apply_overrides(Config(), {"seed": seed})


# --- class 7: one type per column, whatever the chunk boundaries; object columns of mixed types are written ---------


def test_the_wide_file_really_crosses_pandas_chunk_boundary(tmp_path):
    """The precondition of the next tests: read in chunks, `code` comes back as ints and strings mixed."""
    (tmp_path / "w.csv").write_text(wide_mixed(), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)
        chunked = pd.read_csv(tmp_path / "w.csv")
    assert set(chunked["code"].map(type)) == {int, str}


def test_a_column_that_turns_to_text_late_is_text_throughout(tmp_path):
    (tmp_path / "w.csv").write_text(wide_mixed(), encoding="utf-8")
    frame = read_table(tmp_path / "w.csv")
    assert isinstance(frame["code"].dtype, pd.StringDtype)
    assert frame["code"].iloc[0] == "0" and frame["code"].iloc[-1] == "T19"


def test_predict_of_a_late_text_column_to_parquet_works(model_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "w.csv").write_text(wide_mixed(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["predict", "--model", str(model_dir), "--data", "w.csv", "--out", "o.parquet"]) == EXIT_OK
    assert "Traceback" not in capsys.readouterr().err
    scored = pd.read_parquet(tmp_path / "o.parquet", columns=["code", "prediction"])
    assert scored["code"].iloc[-1] == "T19" and len(scored) == 1120


def test_write_table_writes_object_columns_of_mixed_types_as_text(tmp_path):
    frame = pd.DataFrame(
        {
            "mixed": pd.Series([1, "a", 2.5, None], dtype=object),
            "lists": pd.Series([[1], {"a": 1}, None, [2]], dtype=object),
            "fine": pd.Series([[1, 2], [3], None, []], dtype=object),
            "x": [1.0, 2.0, 3.0, 4.0],
        }
    )
    write_table(frame, tmp_path / "o.parquet", overwrite=False)
    back = pd.read_parquet(tmp_path / "o.parquet")
    assert back["mixed"].tolist()[:3] == ["1", "a", "2.5"] and pd.isna(back["mixed"].iloc[3])
    assert back["lists"].iloc[0] == "[1]" and list(back["fine"].iloc[0]) == [1, 2]  # Arrow-storable stays as it is
    assert back["x"].tolist() == [1.0, 2.0, 3.0, 4.0]


# --- class 8: predict --out under folders that do not exist yet: made, once the rows are written ---------------------


def test_predict_makes_the_missing_folders_of_out(model_dir, tmp_path):
    labelled().to_csv(tmp_path / "s.csv", index=False)
    prediction = scoring.predict(str(model_dir), tmp_path / "s.csv", tmp_path / "new" / "deep" / "o.csv", f"sqlite:///{tmp_path / 'unused.db'}", False)
    assert prediction.rows == 60 and len(pd.read_csv(tmp_path / "new" / "deep" / "o.csv")) == 60


def test_write_table_refuses_a_folder_and_a_path_under_a_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("mine\n")
    with pytest.raises(UsageError, match="is a folder"):
        write_table(labelled(), tmp_path / "d", overwrite=True)
    with pytest.raises(UsageError, match="which is a file, not a folder"):
        write_table(labelled(), tmp_path / "f" / "o.csv", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"] and (tmp_path / "f").read_text() == "mine\n"


# --- class 9 at the stage: the check comes before scoring ------------------------------------------------------------


def test_score_refuses_input_columns_named_like_its_outputs(nested_run):
    from pipeline.tracking import loading
    from stages.contract import score

    loaded = loading.load_model(str(nested_run.export_dir), nested_run.tracking_uri)
    with pytest.raises(DataError, match="prediction; rename or drop them"):
        score(loaded.model, labelled().assign(prediction=1), loaded.contract)


# --- class 10: a target whose classes differ only by spaces -----------------------------------------------------------


def test_a_target_with_padded_labels_trains_as_two_classes_and_says_spaces_were_stripped(tmp_path, capsys, monkeypatch):
    frame = labelled(90)
    frame["label"] = [("{}", " {}", "{} ")[i % 3].format(v) for i, v in enumerate(frame["label"])]
    assert {"yes", " yes", "yes ", "no", " no", "no "} == set(frame["label"])  # six spellings of two classes
    frame.to_csv(tmp_path / "t.csv", index=False)
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"  # absolute: MLflow caches a store by its URI, cwd aside
    code = cli.main([*RUN, "--data", "t.csv", "--target", "label", "--tracking-uri", store, "--out", str(tmp_path / "models"), "--json"])
    captured = capsys.readouterr()
    assert code in (EXIT_OK, 3), captured.err
    summary = json.loads(captured.out)
    assert summary["task"] == "binary"
    assert summary["data_step"]["stripped_spaces"]["label"] == int((frame["label"] != frame["label"].str.strip()).sum())
    assert "crispml: warning: stripped spaces around" in captured.err and "'label'" in captured.err
