"""Benchmark: `crispml run`, with and without racing, against a plain scikit-learn loop.

For each data set and repeat it runs, each as a fresh subprocess in a fresh folder:
(a) `benchmarks/plain_loop.py`, the loop a user writes by hand; (b) `crispml run` as a
user runs it, racing on (the default); (c) `crispml run --no-race`, every candidate on
every fold. The three take turns (a, b, c; the order is rotated on each repeat). It
reports each one's median wall time, the ratios (b)/(a) and (c)/(a), each one's peak
memory as PSS over its whole process tree (parallel workers included), the model each
chose with its cross-validation score, whether racing changed crispml's choice, and how
many candidates racing stopped. It writes the table to `benchmarks/RESULTS.md`.

    .venv/bin/python benchmarks/run_benchmark.py --repeats 3 --large-repeats 1   # every default data set
    .venv/bin/python benchmarks/run_benchmark.py --datasets penguins,wide --repeats 3 --merge

The plain loop builds its estimators from crispml's registry (every entry of
`stages.model_registry.MODELS`, crispml's default candidate list), so on large data it fits the
same size-dependent candidates (a kernel approximation for the SVM, row samples); the
ratios are what crispml adds, or saves, around the same fits. Each arm has a time limit
(`--baseline-timeout`, `--crispml-timeout`); a run stopped by it is reported as stopped.
If (b) and (c) choose different models the row says so and a warning goes to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

PLAIN, RACE, NO_RACE = "plain", "race", "no_race"
ARMS = (PLAIN, RACE, NO_RACE)
"""The three things measured: (a) the plain loop, (b) `crispml run`, (c) `crispml run --no-race`."""
RACED_OUT = "raced_out"  # a leaderboard row's status in `crispml run --json` (stages.modeling.RACED_OUT)


@dataclass(frozen=True)
class Dataset:
    """A benchmark data set: a file shipped in data/, or a frame the script generates.

    Attributes:
        name: The name `--datasets` takes and the table shows.
        target: The target column.
        task: `regression`, `binary` or `multiclass`.
        make: Builds the frame, for a generated set; None for `data/<name>.csv`.
        large: Measured `--large-repeats` times instead of `--repeats`.
    """

    name: str
    target: str
    task: str
    make: Callable[[], pd.DataFrame] | None = None
    large: bool = False


def make_binary(rows: int, seed: int = 0) -> pd.DataFrame:
    """20 features (16 numeric, 4 categorical), a nonlinear signal, 5% missing cells in two columns."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 16)).astype("float32")
    frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(16)])
    for i, levels in enumerate([3, 5, 12, 40]):
        frame[f"c{i}"] = pd.Categorical(rng.integers(0, levels, size=rows)).rename_categories(lambda v, i=i: f"k{i}_{v}")
    effect = frame["c1"].cat.codes.to_numpy() % 2 - 0.5
    logit = numeric[:, 0] - 0.8 * numeric[:, 1] + 0.6 * numeric[:, 2] * numeric[:, 3] + np.sin(numeric[:, 4]) + effect
    frame["y"] = np.where(logit + rng.logistic(size=rows) * 0.7 > 0, "yes", "no")
    for col in ["x5", "c2"]:
        frame.loc[rng.random(rows) < 0.05, col] = np.nan
    for c in [f"c{i}" for i in range(4)]:
        frame[c] = frame[c].astype(str).where(frame[c].notna())
    return frame


WIDE_SIGNAL = {"x11": 2.0, "x737": -1.6, "x1500": 1.3, "x2222": -1.0, "x2999": 0.8}
"""The columns of `make_wide`'s table that carry the signal, with their weights in the logit."""


def make_wide(rows: int = 300, columns: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A wide binary table: `columns` standard normal columns `x0...`, of which only `WIDE_SIGNAL` matter.

    The target `y` (`yes`/`no`) is a logistic draw from a linear logit of the `WIDE_SIGNAL`
    columns, spread over the table so that nothing depends on where they sit; every other
    column is noise. No missing cells, no categorical columns: the cost is the width.

    Args:
        rows: Rows of the table.
        columns: Feature columns; at least 3,000 to hold every `WIDE_SIGNAL` column.
        seed: Seed of the random draws.

    Returns:
        The table, feature columns first, then `y`.
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, columns)).astype("float32"), columns=[f"x{i}" for i in range(columns)])
    logit = sum(weight * frame[name].to_numpy(dtype=float) for name, weight in WIDE_SIGNAL.items())
    frame["y"] = np.where(logit + rng.logistic(size=rows) * 0.5 > 0, "yes", "no")
    return frame


DATASETS = {
    "penguins": Dataset("penguins", "species", "multiclass"),
    "bikeshare": Dataset("bikeshare", "bikers", "regression"),
    "wide": Dataset("wide", "y", "binary", functools.partial(make_wide, 300, 3000)),
    "binary-10k": Dataset("binary-10k", "y", "binary", functools.partial(make_binary, 10_000)),
    "binary-100k": Dataset("binary-100k", "y", "binary", functools.partial(make_binary, 100_000), large=True),
    "binary-1m": Dataset("binary-1m", "y", "binary", functools.partial(make_binary, 1_000_000), large=True),
}
DEFAULT_DATASETS = ("penguins", "bikeshare", "wide", "binary-100k", "binary-1m")
"""What a run without `--datasets` measures (binary-10k only when named)."""


def data_file(ds: Dataset, folder: Path) -> Path:
    """The data set's file: the shipped CSV, or the generated frame written as Parquet into `folder`."""
    if ds.make is None:
        return ROOT / "data" / f"{ds.name}.csv"
    path = folder / f"{ds.name}.parquet"
    if not path.exists():
        ds.make().to_parquet(path, index=False)
    return path


def shape(path: Path) -> tuple[int, int]:
    """Rows and feature columns (the target not counted) of a CSV or Parquet file."""
    if path.suffix == ".parquet":
        meta = pq.ParquetFile(path).metadata
        return meta.num_rows, meta.num_columns - 1
    frame = pd.read_csv(path)
    return len(frame), frame.shape[1] - 1


def pss_bytes(smaps_rollup: str) -> int:
    """The `Pss:` line of a /proc/<pid>/smaps_rollup text, in bytes (0 when absent)."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def session_pids(session: int) -> list[int]:
    """Every live process of a session: a benchmarked command and all its workers.

    Each command starts a new session, so its workers belong to it even when their own
    parent exits first and they are handed to init (which a walk down the parent links misses).
    """
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 3 and fields[3] == str(session):
                pids.append(int(entry))
    return pids


class PeakPSS:
    """Samples the summed PSS of a session's processes every `every` seconds and keeps the peak.

    PSS (proportional set size) charges each process its private pages plus its share of
    each shared page (a page mapped by three processes counts a third in each). Summed over
    worker processes that share the parent's libraries and copy-on-write pages, it is the
    memory the tree really holds; summed RSS counts each shared page once per process.
    """

    def __init__(self, session: int, every: float) -> None:
        self.session, self.every, self.peak = session, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        total = 0
        for pid in session_pids(self.session):
            try:
                total += pss_bytes(Path(f"/proc/{pid}/smaps_rollup").read_text())
            except OSError:  # ended between the listing and the read
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every)

    def stop(self) -> int:
        """Stops sampling; returns the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass(frozen=True)
class Measure:
    """One run of one arm: wall seconds, peak PSS bytes, its JSON output ({} when stopped)."""

    seconds: float
    peak_bytes: int
    output: dict
    stopped: bool = False


def measure(command: list[str], timeout: float, cwd: Path, every: float) -> Measure:
    """Runs `command` in `cwd` in a new session, timing it and sampling its memory."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sampler = PeakPSS(proc.pid, every)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return Measure(time.perf_counter() - start, sampler.stop(), {}, stopped=True)
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    if proc.returncode not in (0, 3):  # 3: crispml's no-go gate; the run itself completed
        raise SystemExit(f"{shlex.join(command[:3])} failed with exit {proc.returncode}:\n{err[-3000:]}")
    return Measure(seconds, peak, json.loads(out))


def commands(ds: Dataset, path: Path, run_dir: Path, crispml_args: Sequence[str]) -> dict[str, list[str]]:
    """The command of each arm for one data set, crispml's store and export inside `run_dir`."""
    data = ["--data", str(path), "--target", ds.target, "--task", ds.task]
    crispml = [
        str(BIN / "crispml"), "run", *data, "--json",
        "--tracking-uri", f"sqlite:///{run_dir / 'mlruns' / 'mlflow.db'}", "--out", str(run_dir / "models"),
        *crispml_args,
    ]
    return {
        PLAIN: [sys.executable, str(ROOT / "benchmarks" / "plain_loop.py"), *data],
        RACE: crispml,
        NO_RACE: [*crispml, "--no-race"],
    }


def turn_order(repeat: int) -> tuple[str, ...]:
    """The arms in the order repeat `repeat` runs them: a, b, c first, then rotated by one each repeat."""
    shift = repeat % len(ARMS)
    return ARMS[shift:] + ARMS[:shift]


@dataclass(frozen=True)
class Arm:
    """One arm's summary over its runs, for one table row.

    Attributes:
        seconds: Median wall time of the finished runs; None when every run was stopped.
        limit: The longest run's seconds (the time limit, for a stopped arm).
        peak_mib: The largest peak PSS over the runs, MiB.
        choices: The distinct chosen models with their CV scores, as text, in run order.
        chosen: The distinct chosen model names, in run order.
        raced_out: The distinct counts of raced-out candidates, in run order.
        candidates: The candidate names of the last finished run.
    """

    seconds: float | None
    limit: float
    peak_mib: float
    choices: tuple[str, ...]
    chosen: tuple[str, ...]
    raced_out: tuple[int, ...]
    candidates: frozenset[str]


def _unique(values: Sequence) -> tuple:
    return tuple(dict.fromkeys(values))


def _choice(output: dict) -> tuple[str, str]:
    """The chosen model's name and `name (metric score)` of one run's JSON output."""
    chosen = output["chosen_model"]
    if "leaderboard" not in output:  # the plain loop
        return chosen, f"{chosen} ({output['metric']} {output['cv']:.4f})"
    cv = next((r["mean"].get(output["metric"]) for r in output["leaderboard"] if r["model"] == chosen), None)
    return chosen, f"{chosen} ({output['metric']} {cv:.4f})" if cv is not None else chosen


def summarise_arm(runs: Sequence[Measure]) -> Arm:
    """One arm's summary (`Arm`) from its runs, stopped ones included."""
    finished = [m for m in runs if not m.stopped]
    picks = [_choice(m.output) for m in finished]
    last = finished[-1].output if finished else {}
    if "leaderboard" in last:
        candidates = frozenset(r["model"] for r in last["leaderboard"])
    else:
        candidates = frozenset(last.get("candidates", ()))
    return Arm(
        seconds=statistics.median(m.seconds for m in finished) if finished else None,
        limit=max((m.seconds for m in runs), default=0.0),
        peak_mib=max((m.peak_bytes for m in runs), default=0) / 2**20,
        choices=_unique(text for _, text in picks),
        chosen=_unique(name for name, _ in picks),
        raced_out=_unique(
            sum(r["status"] == RACED_OUT for r in m.output["leaderboard"]) for m in finished if "leaderboard" in m.output
        ),
        candidates=candidates,
    )


HEADER = (
    "data set", "rows", "columns", "runs", "(a) plain s", "(b) race s", "(c) no-race s", "(b)/(a)", "(c)/(a)",
    "(a) PSS MiB", "(b) PSS MiB", "(c) PSS MiB", "(a) chose", "(b) chose", "(c) chose", "(b) = (c)",
    "(b) raced out", "commit",
)


def _seconds(arm: Arm) -> str:
    return f"{arm.seconds:.1f}" if arm.seconds is not None else f">{arm.limit:.0f} (stopped)"


def _ratio(arm: Arm, plain: Arm) -> str:
    if arm.seconds is None:
        return "-"
    if plain.seconds is None:  # the loop was stopped at its limit: the ratio is below this
        return f"<{arm.seconds / plain.limit:.2f}"
    return f"{arm.seconds / plain.seconds:.2f}"


def same_choice(race: Arm, no_race: Arm) -> str:
    """`yes` when (b) and (c) chose the same model in every run, `no` when not, `-` when either never finished."""
    if not race.chosen or not no_race.chosen:
        return "-"
    return "yes" if set(race.chosen) == set(no_race.chosen) and len(race.chosen) == 1 else "no"


def table_row(name: str, rows: int, columns: int, repeats: int, arms: dict[str, Arm], commit: str) -> str:
    """One line of the results table, cells in `HEADER` order."""
    plain, race, no_race = arms[PLAIN], arms[RACE], arms[NO_RACE]
    cells = [
        name, f"{rows:,}", f"{columns:,}", str(repeats),
        _seconds(plain), _seconds(race), _seconds(no_race), _ratio(race, plain), _ratio(no_race, plain),
        *(f"{arms[a].peak_mib:.0f}" for a in ARMS),
        *(" / ".join(arms[a].choices) or "-" for a in ARMS),
        same_choice(race, no_race),
        "/".join(str(n) for n in race.raced_out) or "-",
        commit,
    ]
    return "| " + " | ".join(cells) + " |"


def kept_rows(text: str, replaced: Sequence[str]) -> dict[str, str]:
    """The rows of an earlier results table to keep under `--merge`: other data sets', in this table's format.

    A row with a different number of cells (an older table's format) is dropped, with a note on stderr.
    """
    kept, dropped = {}, []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] not in DATASETS or cells[0] in replaced:
            continue
        if len(cells) == len(HEADER):
            kept[cells[0]] = line
        else:
            dropped.append(cells[0])
    if dropped:
        print(f"--merge: dropped the rows of {', '.join(dropped)}: they are in an older table format; "
              f"measure them again with --datasets {','.join(dropped)} --merge", file=sys.stderr)
    return kept


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def results_text(lines_by_name: dict[str, str], argv: Sequence[str], merged: bool, every: float) -> str:
    """The whole RESULTS.md: what was run and how it was measured, then the table."""
    note = " (the other rows are kept from earlier runs; `commit` says which code each row measured)." if merged else "."
    return "\n".join([
        "# Benchmark results",
        "",
        (
            f"Last run: `{shlex.join(['python', 'benchmarks/run_benchmark.py', *argv])}` on {time.strftime('%Y-%m-%d')}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}{note}"
        ),
        "",
        "(a) is the plain scikit-learn loop (`benchmarks/plain_loop.py`): crispml's default candidates (every",
        "entry of `stages.model_registry.MODELS`, gradient boosting included), the same preprocessing, holdout and folds,",
        "one `cross_validate(n_jobs=-1)` per model, the best mean score refitted. (b) is `crispml run` as a user",
        "runs it, racing on (the default): a candidate whose folds so far show it cannot be chosen stops early.",
        "(c) is `crispml run --no-race`: every candidate on every fold. (b) and (c) also profile the data, log to",
        "MLflow, evaluate on the holdout, plot and export. Each run is a fresh process in a fresh folder (its own",
        "MLflow store); the three take turns, the order rotated on each repeat.",
        "",
        "Wall times are medians over the runs, process start included. Peak memory is the largest PSS",
        f"(proportional set size, MiB) of the process and all its workers, sampled every {every:g} s: the sum",
        "of the `Pss:` lines of `/proc/<pid>/smaps_rollup`, which charges a page shared by several processes",
        "in equal parts to each (summed RSS would count it once per process).",
        "`columns` excludes the target. `chose` is the chosen model with its mean cross-validation score (the loop",
        "takes the best mean; crispml applies its selection rule); `(b) = (c)` says whether racing kept crispml's",
        "choice; `(b) raced out` counts the candidates racing stopped.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *(lines_by_name[name] for name in DATASETS if name in lines_by_name),
    ]) + "\n"


def _warn(name: str, arms: dict[str, Arm]) -> None:
    race, no_race, plain = arms[RACE], arms[NO_RACE], arms[PLAIN]
    if same_choice(race, no_race) == "no":
        print(f"warning: {name}: racing changed the chosen model: (b) race chose {', '.join(race.chosen)}, "
              f"(c) no-race chose {', '.join(no_race.chosen)}", file=sys.stderr)
    if plain.candidates and no_race.candidates and plain.candidates != no_race.candidates:
        print(f"warning: {name}: the plain loop fitted {', '.join(sorted(plain.candidates))} but crispml "
              f"{', '.join(sorted(no_race.candidates))}; the ratios compare different work", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-repeats", type=int, default=1, help="repeats for the 100k and 1M row data sets")
    parser.add_argument("--baseline-timeout", type=float, default=900.0, help="seconds before the plain loop is stopped")
    parser.add_argument("--crispml-timeout", type=float, default=1800.0, help="seconds before a crispml run is stopped")
    parser.add_argument("--crispml-args", default="", help="extra arguments for both crispml runs")
    parser.add_argument("--sample-every", type=float, default=0.2, help="seconds between memory samples")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--merge", action="store_true", help="replace only these data sets' rows in --out, keep the others")
    args = parser.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        parser.error(f"unknown data set {', '.join(unknown) or '(none named)'}; choose from {', '.join(DATASETS)}")
    commit = _commit()
    lines_by_name = kept_rows(args.out.read_text(), names) if args.merge and args.out.exists() else {}
    timeouts = {PLAIN: args.baseline_timeout, RACE: args.crispml_timeout, NO_RACE: args.crispml_timeout}
    with tempfile.TemporaryDirectory(prefix="crispml-bench-") as tmp:
        folder = Path(tmp)
        for name in names:
            ds = DATASETS[name]
            path = data_file(ds, folder)
            n_rows, n_columns = shape(path)
            repeats = args.large_repeats if ds.large else args.repeats
            runs: dict[str, list[Measure]] = {arm: [] for arm in ARMS}
            for i in range(repeats):
                for arm in turn_order(i):
                    if runs[arm] and runs[arm][-1].stopped:  # once an arm hit its limit, it will again
                        continue
                    run_dir = folder / f"{name}-{i}-{arm}"
                    run_dir.mkdir()
                    command = commands(ds, path, run_dir, shlex.split(args.crispml_args))[arm]
                    runs[arm].append(measure(command, timeouts[arm], run_dir, args.sample_every))
                print(f"{name} #{i + 1}: " + ", ".join(
                    f"{arm} {runs[arm][-1].seconds:.1f}s{' (stopped)' if runs[arm][-1].stopped else ''}" for arm in ARMS
                ), file=sys.stderr, flush=True)
            arms = {arm: summarise_arm(runs[arm]) for arm in ARMS}
            _warn(name, arms)
            lines_by_name[name] = table_row(name, n_rows, n_columns, repeats, arms, commit)
    text = results_text(lines_by_name, sys.argv[1:], args.merge, args.sample_every)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
