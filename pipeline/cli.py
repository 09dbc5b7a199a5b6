"""The `crispml` command line: `run` and `predict`.

Exit codes: 0 success; 2 bad usage, configuration or data (one line on stderr that says
what to fix); 1 a bug in crispml (with a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pipeline.errors import EXIT_BUG, EXIT_OK, CrispmlError, UsageError

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line `UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = _Parser(prog="crispml", description="Model-comparison AutoML that follows CRISP-DM, tracked in MLflow.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="compare candidate models and deploy the best",
        description="Run the CRISP-DM pipeline. With no arguments it runs on data/penguins.csv (target: species).",
    )
    run.add_argument("--config", type=Path, help="TOML config file; flags override it")
    run.add_argument("--data", type=Path, help="CSV or Parquet file (default: data/penguins.csv)")
    run.add_argument("--target", help="column to predict")
    run.add_argument("--task", choices=["auto", "regression", "binary", "multiclass"], help="default: auto")
    run.add_argument("--metric", help="primary metric (default: r2, roc_auc or balanced_accuracy by task)")
    run.add_argument("--models", type=_names, help="comma-separated candidates, e.g. baseline,linear,random_forest")
    run.add_argument("--folds", type=int, help="cross-validation folds (default 5)")
    run.add_argument("--holdout", type=float, help="holdout share of rows (default 0.2)")
    run.add_argument("--seed", type=int, help="random seed (default 42)")
    run.add_argument("--experiment", help="MLflow experiment and registered model name (default: data file stem)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlruns/mlflow.db)")
    run.add_argument("--out", type=Path, help="export folder (default: models); the model goes to OUT/EXPERIMENT/model")
    run.add_argument("--n-jobs", type=int, help="parallel fits (default -1: every core)")
    run.add_argument("--json", action="store_true", help="print one JSON object to stdout instead of tables")

    predict = commands.add_parser(
        "predict",
        help="score a data file with a saved model",
        description="Batch scoring: writes the input rows with a prediction column (and proba_<class> columns).",
    )
    predict.add_argument("--model", required=True, help="model folder (OUT/EXPERIMENT/model) or URI (models:/NAME@champion)")
    predict.add_argument("--data", required=True, type=Path, help="CSV or Parquet file to score")
    predict.add_argument("--out", required=True, type=Path, help="output CSV or Parquet file")
    predict.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ URIs (default: sqlite:///mlruns/mlflow.db)")
    predict.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default: `sys.argv[1:]`).

    Returns:
        The exit code.
    """
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("no command given; use 'crispml run' or 'crispml predict' (see 'crispml --help')")
        return _run(args) if args.command == "run" else _predict(args)
    except CrispmlError as exc:
        print(f"crispml: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("crispml: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print("crispml: internal error (a bug in crispml); please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG


def _run(args: argparse.Namespace) -> int:
    from pipeline import runner
    from pipeline.config import apply_overrides, load_config

    config = load_config(args.config)
    if args.data is not None and args.target is None and (args.config is None or not _config_sets_target(args.config)):
        raise UsageError(f"--data {args.data} needs --target: name the column to predict")
    config = apply_overrides(
        config,
        {
            "data.path": str(args.data) if args.data else None,
            "business.target": args.target,
            "business.task": args.task,
            "business.metric": args.metric,
            "modeling.models": list(args.models) if args.models is not None else None,
            "modeling.folds": args.folds,
            "modeling.n_jobs": args.n_jobs,
            "preparation.holdout": args.holdout,
            "seed": args.seed,
            "tracking.experiment": args.experiment,
            "tracking.uri": args.tracking_uri,
            "deployment.out": str(args.out) if args.out else None,
        },
    )
    start = time.perf_counter()
    progress = _silent if args.json else _print_progress(start)
    result = runner.run(config, progress)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps(_summary(result, elapsed), indent=2, allow_nan=False))
    else:
        _print_summary(result, elapsed)
    return EXIT_OK


def _config_sets_target(path: Path) -> bool:
    import tomllib

    try:
        return "target" in tomllib.loads(Path(path).read_text(encoding="utf-8")).get("business", {})
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return False


def _predict(args: argparse.Namespace) -> int:
    from pipeline import runner
    from pipeline.config import Config

    uri = args.tracking_uri or Config().tracking_uri
    rows = runner.predict(args.model, args.data, args.out, uri, args.overwrite)
    print(f"scored {rows} rows with {args.model}; wrote {args.out}", file=sys.stderr)
    return EXIT_OK


def _silent(stage: str, message: str) -> None:
    pass


def _print_progress(start: float) -> Any:
    def progress(stage: str, message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {stage:<13} {message}", file=sys.stderr, flush=True)

    return progress


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def _summary(result: Any, elapsed: float) -> dict[str, Any]:
    board = result.leaderboard
    rows = []
    for r in board.rows:
        rows.append(
            {
                "model": r.name,
                "status": r.status,
                "error": r.error,
                "mean": {m: r.mean(m) for m in board.metrics},
                "std": {m: r.std(m) for m in board.metrics},
                "fit_seconds": r.fit_seconds,
                "predict_seconds": r.predict_seconds,
            }
        )
    return _clean(
        {
            "task": result.profile.task,
            "target": result.profile.target,
            "metric": board.metric,
            "folds": board.n_folds,
            "leaderboard": rows,
            "chosen_model": result.evaluation.model,
            "holdout": result.evaluation.holdout,
            "experiment": result.experiment,
            "tracking_uri": result.tracking_uri,
            "run_id": result.run_id,
            "model_uri": result.model_uri,
            "registered_model_uri": result.registered,
            "export_path": str(result.export_dir),
            "seconds": round(elapsed, 2),
        }
    )


def _print_summary(result: Any, elapsed: float) -> None:
    board = result.leaderboard
    frame = board.to_frame()
    shown = ["rank", "model", "status"]
    for m in board.metrics:
        frame[m] = [
            "-" if math.isnan(mu) else f"{mu:.4f} ± {sd:.4f}"
            for mu, sd in zip(frame[f"{m}_mean"], frame[f"{m}_std"].fillna(0.0))
        ]
        shown.append(m)
    frame["fit_s"] = frame["fit_seconds"].map(lambda v: "-" if math.isnan(v) else f"{v:.2f}")
    shown.append("fit_s")
    print(f"\nLeaderboard ({board.n_folds}-fold CV, ranked by {board.metric}):")
    print(frame[shown].to_string(index=False))
    for r in board.rows:
        if r.error:
            print(f"  {r.name} failed: {r.error}")
    ev = result.evaluation
    holdout = ", ".join(f"{k} {v:.4f}" for k, v in ev.holdout.items())
    print(f"\nChosen: {ev.model}. Holdout ({ev.n_test} rows): {holdout}")
    print(f"MLflow run {result.run_id} in experiment '{result.experiment}' at {result.tracking_uri}")
    print(f"Model: {result.registered or result.model_uri}; exported to {result.export_dir}")
    print(f"Done in {elapsed:.1f}s.")
