"""Benchmark: `crispml run` against a plain scikit-learn loop, in one invocation.

For each data set it runs (a) `benchmarks/plain_loop.py` and (b) `crispml run`, both as
subprocesses, alternating, `--repeats` times each. It reports median wall time, the ratio
(b)/(a), the peak resident memory of each whole process tree (parallel workers included),
and each one's chosen model and score. It writes the table to `benchmarks/RESULTS.md`.

    .venv/bin/python benchmarks/run_benchmark.py --repeats 3 --large-repeats 1   # every data set
    .venv/bin/python benchmarks/run_benchmark.py --datasets penguins,bikeshare --repeats 3

The plain loop builds its estimators from crispml's registry, so on large data it fits the
same size-dependent candidates (a kernel approximation for the SVM, row samples); the ratio
is what crispml adds around the same fits. It has a time limit (`--baseline-timeout`); a
loop stopped by it is reported as stopped, not as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Dataset:
    name: str
    target: str
    task: str
    rows: int  # for generated sets; 0 for shipped files


DATASETS = {
    "penguins": Dataset("penguins", "species", "multiclass", 0),
    "bikeshare": Dataset("bikeshare", "bikers", "regression", 0),
    "binary-10k": Dataset("binary-10k", "y", "binary", 10_000),
    "binary-100k": Dataset("binary-100k", "y", "binary", 100_000),
    "binary-1m": Dataset("binary-1m", "y", "binary", 1_000_000),
}


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


def data_file(ds: Dataset, folder: Path) -> Path:
    if ds.rows == 0:
        return ROOT / "data" / f"{ds.name}.csv"
    path = folder / f"{ds.name}.parquet"
    if not path.exists():
        make_binary(ds.rows).to_parquet(path, index=False)
    return path


class PeakRSS:
    """Samples the summed resident memory of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def _rss(self, pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(self._rss(p) for p in self._tree()))
            self._stop.wait(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_bytes: int
    output: dict
    stopped: bool = False


def measure(command: list[str], timeout: float, cwd: Path) -> Measure:
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sampler = PeakRSS(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return Measure(time.perf_counter() - start, sampler.stop(), {}, stopped=True)
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    if proc.returncode not in (0, 3):  # 3: crispml's no-go gate; the run itself completed
        raise SystemExit(f"{command[:3]} failed with exit {proc.returncode}:\n{err[-3000:]}")
    return Measure(seconds, peak, json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-repeats", type=int, default=1, help="repeats for the 100k and 1M row data sets")
    parser.add_argument("--baseline-timeout", type=float, default=900.0, help="seconds before the plain loop is stopped")
    parser.add_argument("--crispml-timeout", type=float, default=1800.0)
    parser.add_argument("--crispml-args", default="", help="extra arguments for crispml run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--merge", action="store_true", help="replace only these data sets' rows in --out, keep the others")
    args = parser.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="crispml-bench-") as tmp:
        folder = Path(tmp)
        for name in names:
            ds = DATASETS[name]
            path = data_file(ds, folder)
            n_rows = ds.rows or len(pd.read_csv(path, usecols=[ds.target]))  # generated sets know their size
            plain_cmd = [sys.executable, str(ROOT / "benchmarks" / "plain_loop.py"), "--data", str(path), "--target", ds.target, "--task", ds.task]
            plain, ours = [], []
            for i in range(args.large_repeats if ds.rows >= 100_000 else args.repeats):
                run_dir = folder / f"{name}-{i}"
                run_dir.mkdir()
                crispml_cmd = [
                    str(BIN / "crispml"), "run", "--data", str(path), "--target", ds.target, "--task", ds.task, "--json",
                    "--tracking-uri", f"sqlite:///{run_dir / 'mlruns' / 'mlflow.db'}", "--out", str(run_dir / "models"),
                    *args.crispml_args.split(),
                ]
                stopped_before = any(m.stopped for m in plain)
                if not stopped_before:  # once the plain loop hit its limit, it will again
                    plain.append(measure(plain_cmd, args.baseline_timeout, ROOT))
                ours.append(measure(crispml_cmd, args.crispml_timeout, run_dir))
                print(f"{name} #{i + 1}: plain {plain[-1].seconds:.1f}s{' (stopped)' if plain[-1].stopped else ''}, "
                      f"crispml {ours[-1].seconds:.1f}s", file=sys.stderr, flush=True)
            rows.append(summarise(name, n_rows, plain, ours))
    write_results(rows, args)


def summarise(name: str, n_rows: int, plain: list[Measure], ours: list[Measure]) -> dict:
    finished = [m for m in plain if not m.stopped]
    a = statistics.median(m.seconds for m in finished) if finished else None
    b = statistics.median(m.seconds for m in ours)
    last = ours[-1].output
    leaderboard = last.get("leaderboard", [{}])
    chosen = last.get("chosen_model", "?")
    cv = next((r["mean"][last["metric"]] for r in leaderboard if r.get("model") == chosen), None)
    return {
        "dataset": name,
        "rows": n_rows,
        "plain_s": a,
        "plain_stopped": not finished,
        "plain_limit": max((m.seconds for m in plain), default=0),
        "crispml_s": b,
        "ratio": (b / a) if a else None,
        "plain_peak_mb": max(m.peak_bytes for m in plain) / 2**20,
        "crispml_peak_mb": max(m.peak_bytes for m in ours) / 2**20,
        "plain_choice": f"{finished[-1].output['chosen_model']} ({finished[-1].output['metric']} {finished[-1].output['cv']:.4f})" if finished else "-",
        "crispml_choice": f"{chosen} ({last.get('metric')} {cv:.4f})" if cv is not None else chosen,
        "repeats": len(ours),
    }


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(rows: list[dict], args: argparse.Namespace) -> None:
    commit = _commit()
    lines_by_name = {}
    if args.merge and args.out.exists():  # keep the other data sets' rows of the last full run
        for line in args.out.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| ") and cells[0] in DATASETS:
                lines_by_name[cells[0]] = line
    for r in rows:
        plain = f">{r['plain_limit']:.0f} (stopped)" if r["plain_stopped"] else f"{r['plain_s']:.1f}"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        lines_by_name[r["dataset"]] = (
            f"| {r['dataset']} | {r['rows']:,} | {r['repeats']} | {plain} | {r['crispml_s']:.1f} | {ratio} | "
            f"{r['plain_peak_mb']:.0f} | {r['crispml_peak_mb']:.0f} | {r['plain_choice']} | {r['crispml_choice']} | {commit} |"
        )
    lines = [
        "# Benchmark results",
        "",
        f"Last run: `python benchmarks/run_benchmark.py --datasets {args.datasets} --repeats {args.repeats} "
        f"--large-repeats {args.large_repeats}{' --merge' if args.merge else ''}` on "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {platform.python_version()}"
        + (" (the other rows are kept from earlier runs; `commit` says which code each row measured)." if args.merge else "."),
        "(a) is the plain scikit-learn loop (`benchmarks/plain_loop.py`); (b) is `crispml run` with profiling, MLflow",
        "logging, holdout evaluation and export. Wall times are medians over the runs, process start included;",
        "peak memory is the largest summed RSS (MiB) of the process and its workers.",
        "",
        "| data set | rows | runs | (a) plain s | (b) crispml s | (b)/(a) | (a) peak MiB | (b) peak MiB | (a) chose | (b) chose | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(lines_by_name[name] for name in DATASETS if name in lines_by_name),
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
