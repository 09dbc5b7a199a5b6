"""The `crispml` command line: `run`, `predict`, `ui` and `serve`.

Exit codes: 0 success; 2 bad usage, configuration or data (one line on stderr that says
what to fix); 3 the run finished but the model failed the go/no-go gate (logged, not
registered or exported); 4 it passed the gate but may be worse than the registry's champion
(registered as `challenger`, not exported); 1 a bug in crispml (with a traceback); 130 interrupted by Ctrl-C
(SIGINT), 143 stopped by SIGTERM. Warnings are lines starting `crispml: warning:` on stderr.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pipeline import interrupts
from pipeline.errors import (
    EXIT_BUG,
    EXIT_CHALLENGER,
    EXIT_INTERRUPTED,
    EXIT_NO_GO,
    EXIT_OK,
    EXIT_USAGE,
    CrispmlError,
    UsageError,
    first_line,
)

EXIT_BROKEN_PIPE = 141
"""stdout was closed by its reader (128 + SIGPIPE, as for `cat`); the run itself completed."""

WARNING = "warning"
"""The progress stage under which the runner reports warnings (`pipeline.phases.WARNING`)."""
FIT = "fit"
"""The progress stage of each finished fit (`pipeline.phases.FIT`)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line `UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    # One declaration per option, in --help order (87 lines): split up, the command line's reference would scatter.
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
    run.add_argument(
        "--candidate-timeout",
        type=float,
        metavar="SECONDS",
        help="stop a candidate whose fits take longer than this in total and mark it failed (default 600; 0: no limit)",
    )
    run.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="bound the whole run; candidates not finished in time are reported as such (default 0: no budget)",
    )
    run.add_argument("--tune", action="store_true", default=None, help="also cross-validate a tuned variant of each candidate")
    run.add_argument(
        "--no-race",
        dest="race",
        action="store_false",
        default=None,
        help="cross-validate every candidate on every fold (default: stop a candidate once its folds show it cannot be chosen)",
    )
    run.add_argument(
        "--no-challenge",
        dest="challenge",
        action="store_false",
        default=None,
        help="let a model that passes its gate take `champion` without comparing it with the current champion",
    )
    run.add_argument("--backend", choices=["local", "dask"], help="where the fits run (default local)")
    run.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address for --backend dask (default: a local cluster)")
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

    ui = commands.add_parser(
        "ui",
        help="open the MLflow UI on the store 'crispml run' writes",
        description="Start the MLflow UI on 127.0.0.1 (one worker, no job runners) and print the URL of the "
        "experiment's runs page. Ctrl-C stops it.",
    )
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    ui.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///mlruns/mlflow.db)")
    ui.add_argument("--experiment", help="experiment whose runs page to print (default: penguins)")

    serve = commands.add_parser(
        "serve",
        help="serve a saved model over HTTP (MLflow's scoring protocol)",
        description="Serve a model on 127.0.0.1: GET /ping; POST /invocations with CSV, Parquet or JSON "
        "(dataframe_split, dataframe_records, instances, inputs). A request that lacks a column, or has text in a "
        "numeric one, gets a 400 naming it. Ctrl-C stops it.",
    )
    serve.add_argument("--model", required=True, help="model folder (OUT/EXPERIMENT/model) or URI (models:/NAME@champion)")
    serve.add_argument("--port", type=int, default=5001, help="port on 127.0.0.1 (default 5001)")
    serve.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ URIs (default: sqlite:///mlruns/mlflow.db)")
    serve.add_argument(
        "--max-request-mb", type=float, default=100.0, help="largest request body in MB; a larger one gets a 413 (default 100)"
    )
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
            raise UsageError("no command given; use 'crispml run', 'predict', 'ui' or 'serve' (see 'crispml --help')")
        handlers = {"run": _run, "predict": _predict, "ui": _ui, "serve": _serve}
        with interrupts.on_signals():  # a signal stops the command at the next safe point (pipeline.interrupts)
            code = handlers[args.command](args)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return code
    except BrokenPipeError:
        # Whoever read stdout stopped reading (`crispml run | head`); the work itself is done.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except CrispmlError as exc:
        print(f"crispml: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
        print(
            f"crispml: interrupted by {name}; an MLflow run still in progress is marked KILLED, "
            "and the registry and the export are left as they were before it",
            file=sys.stderr,
        )
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except Exception as exc:
        lost = _store_lost(exc)
        if lost:  # the store answered the checks before the work, then stopped answering
            print(f"crispml: error: {lost}", file=sys.stderr)
            return EXIT_USAGE
        traceback.print_exc()
        print("crispml: internal error (a bug in crispml); please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG


def entry() -> NoReturn:
    """The `crispml` command: `main`, then exit with its code.

    Every exit handler runs as usual (child processes are reaped, temporary files removed,
    MLflow's threads stopped); then the process ends at once, its standard output and error
    flushed, without the interpreter's own clean-up: tearing down every module and the
    million objects MLflow, SQLAlchemy and scikit-learn leave behind took 0.6-0.8 s of a 9 s
    run on penguins, after all the work was done and written. Only the command does this;
    `main` called in a process that goes on leaves the process alone. A `main` that does not
    return (`--help`) exits the usual way.
    """
    returned: list[int] = []
    atexit.register(_end_now, returned)  # registered first, so the last exit handler to run
    code = main()
    returned.append(code)
    gc.freeze()  # the exit handlers' garbage collections skip those objects too
    sys.exit(code)


def _end_now(returned: list[int]) -> None:
    """The last exit handler: end the process with `main`'s code, skipping the interpreter's teardown."""
    if not returned:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can reach it
            stream.flush()
    os._exit(returned[0])


def _store_lost(exc: BaseException) -> str:
    """The one-line message for a tracking server that stopped answering mid-command, or "" for anything else.

    The store is checked before any work starts (`store.check_store`); a server that dies
    or goes silent after that surfaces as a `requests` connection error or timeout, or as an
    `MlflowException` wrapping one ("API request to ... failed").
    """
    import requests

    network = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, network):
        cause = cause.__cause__ or cause.__context__
    text = first_line(exc)
    if cause is None and not (type(exc).__name__ == "MlflowException" and text.startswith("API request to")):
        return ""
    return (
        f"the MLflow tracking server stopped answering during the command ({text[:200]}); "
        "check that it is up (--tracking-uri) and run the command again"
    )


def _run(args: argparse.Namespace) -> int:
    # The time budget, the progress clock and "Done in" count from here, imports included,
    # so they agree with the wall time a scheduler measures.
    started = time.monotonic()
    from pipeline.backends import local_pool

    # The worker processes' fork server imports scikit-learn and pandas in its own process
    # while this one imports MLflow and reads the data: two cores, both busy from the start.
    local_pool.prestart()
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
            "modeling.candidate_timeout": args.candidate_timeout,
            "modeling.time_budget": args.time_budget,
            "modeling.tune": args.tune,
            "modeling.race": args.race,
            "modeling.backend": args.backend,
            "modeling.scheduler": args.scheduler,
            "preparation.holdout": args.holdout,
            "seed": args.seed,
            "tracking.experiment": args.experiment,
            "tracking.uri": args.tracking_uri,
            "deployment.out": str(args.out) if args.out else None,
            "deployment.challenge": args.challenge,
        },
    )
    progress = _warnings_only if args.json else ProgressPrinter(started)
    result = runner.run(config, progress, started=started)
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps(_summary(result, elapsed), indent=2, allow_nan=False))
    else:
        _print_summary(result, elapsed)
    if not result.decision.go:
        print(f"crispml: no-go: {'; '.join(result.decision.reasons)}", file=sys.stderr)
        return EXIT_NO_GO
    if result.challenger:
        print(f"crispml: challenger: {result.challenge.reason}", file=sys.stderr)
        return EXIT_CHALLENGER
    return EXIT_OK


def _config_sets_target(path: Path) -> bool:
    import tomllib

    try:
        return "target" in tomllib.loads(Path(path).read_text(encoding="utf-8-sig")).get("business", {})
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return False


def _predict(args: argparse.Namespace) -> int:
    from pipeline import scoring
    from pipeline.settings import Config

    uri = args.tracking_uri or Config().tracking_uri
    prediction = scoring.predict(args.model, args.data, args.out, uri, args.overwrite)
    for warning in prediction.warnings:
        _warn(warning)
    print(f"scored {prediction.rows} rows with {args.model}; wrote {args.out}", file=sys.stderr)
    return EXIT_OK


def _ui(args: argparse.Namespace) -> int:
    from pipeline import servers
    from pipeline.settings import Config

    config = Config()
    uri = args.tracking_uri or config.tracking_uri
    experiment = args.experiment or config.experiment

    def announce(url: str) -> None:
        print(f"MLflow UI for {uri} (experiment '{experiment}'); Ctrl-C stops it", file=sys.stderr)
        print(url, flush=True)

    return servers.run_ui(uri, experiment, args.port, announce)


def _serve(args: argparse.Namespace) -> int:
    from pipeline import servers
    from pipeline.settings import Config

    uri = args.tracking_uri or Config().tracking_uri

    def announce(url: str) -> None:
        layouts = "dataframe_split, dataframe_records, instances, inputs"
        print(f"serving {args.model}: POST CSV, Parquet or JSON ({layouts}) to", file=sys.stderr)
        print(url, flush=True)

    return servers.serve_model(args.model, uri, args.port, announce, max_request_mb=args.max_request_mb, warn=_warn)


def _warn(message: str) -> None:
    print(f"crispml: warning: {message}", file=sys.stderr, flush=True)


def _warnings_only(stage: str, message: str, done: float | None = None) -> None:
    if stage == WARNING:
        _warn(message)


class ProgressPrinter:
    """Progress on stderr: stage lines with the elapsed time; on a terminal, also a live line
    with the fits done and an estimate of the time left (plain output gets per-candidate lines only)."""

    def __init__(self, start: float, stream: Any = None) -> None:
        self.start = start
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.modeling_start: float | None = None
        self.line_open = False

    def __call__(self, stage: str, message: str, done: float | None = None) -> None:
        now = time.monotonic()
        if stage == "modeling" and self.modeling_start is None:
            self.modeling_start = now
        if stage == FIT:
            if self.live and done:
                spent = now - (self.modeling_start or self.start)
                left = spent * (1 - done) / done
                self._write(f"\r\033[K[{now - self.start:6.1f}s] {'modeling':<13} {message}, about {left:.0f}s left")
                self.line_open = True
            return
        if self.line_open:
            self._write("\r\033[K")
            self.line_open = False
        if stage == WARNING:
            _warn(message)
            return
        self._write(f"[{now - self.start:6.1f}s] {stage:<13} {message}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _leaderboard_rows(table: Any, board: Any) -> list[dict[str, Any]]:
    """The annotated leaderboard's rows as `--json` gives them: each metric's mean and std nested, and the folds run."""
    folds = {r.name: len(next(iter(r.fold_scores.values()), ())) for r in board.rows}  # fewer for a raced-out row
    flags = ("chosen", "within_noise", "equivalent")
    return [
        {
            **{k: bool(row[k]) if k in flags else row[k] for k in ("model", "status", "error", *_COMPARISON)},
            "folds": folds[row["model"]],
            "mean": {m: row[f"{m}_mean"] for m in board.metrics},
            "std": {m: row[f"{m}_std"] for m in board.metrics},
            "fit_seconds": row["fit_seconds"],
            "predict_seconds": row["predict_seconds"],
        }
        for row in table.to_dict("records")
    ]


_COMPARISON = ("chosen", "diff_vs_top", "p_value", "within_noise", "p_worse", "equivalent")


def _summary(result: Any, elapsed: float) -> dict[str, Any]:
    """`--json`'s document: the run's results, the leaderboard as the one annotated table (`RunResult.table`)."""
    from stages.deployment import json_safe

    board = result.leaderboard
    selection = result.selection
    rows = _leaderboard_rows(result.table, board)
    return json_safe(
        {
            "task": result.profile.task,
            "target": result.profile.target,
            "data_step": result.profile.data_step(),
            "metric": board.metric,
            "folds": board.n_folds,
            "leaderboard": rows,
            "chosen_model": result.evaluation.model,
            "selection": {
                "rule": selection.rule,
                "alpha": selection.alpha,
                "tolerance": selection.tolerance,
                "tolerance_basis": selection.tolerance_basis,
                "top": selection.top,
                "chosen": selection.chosen,
                "reason": selection.reason,
            },
            "holdout": result.evaluation.holdout,
            "warnings": list(result.evaluation.warnings),
            "decision": result.decision.label,
            "reasons": list(result.decision.reasons),
            "checks": [
                {"criterion": c.criterion, "passed": c.passed, "value": c.value, "threshold": c.threshold}
                for c in result.decision.checks
            ],
            "predict_ms_per_row": result.footprint.ms_per_row,
            "model_mb": result.footprint.model_mb,
            "experiment": result.experiment,
            "tracking_uri": result.tracking_uri,
            "run_id": result.run_id,
            "model_uri": result.model_uri,
            "registered_model_uri": result.registered,
            "challenge": result.challenge.to_dict() if result.challenge is not None else None,
            "export_path": str(result.export_dir) if result.export_dir else None,
            "seconds": round(elapsed, 2),
        }
    )


def _print_summary(result: Any, elapsed: float) -> None:
    board = result.leaderboard
    selection = result.selection
    frame = result.table.copy()
    frame["model"] = [f"{n} *" if chosen else n for n, chosen in zip(frame["model"], frame["chosen"])]
    shown = ["rank", "model", "status"]
    for m in board.metrics:
        frame[m] = [
            "-" if math.isnan(mu) else f"{mu:.4f} ± {sd:.4f}"
            for mu, sd in zip(frame[f"{m}_mean"], frame[f"{m}_std"].fillna(0.0))
        ]
        shown.append(m)
    frame["diff_vs_top"] = frame["diff_vs_top"].map(lambda v: "-" if math.isnan(v) else f"{v:+.4f}")
    frame["p_value"] = frame["p_value"].map(lambda v: "-" if math.isnan(v) else f"{v:.3g}")
    frame["p_worse"] = [
        "-" if math.isnan(v) else f"{v:.1%}" + (" =" if same else "") for v, same in zip(frame["p_worse"], frame["equivalent"])
    ]
    frame["fit_s"] = frame["fit_seconds"].map(lambda v: "-" if math.isnan(v) else f"{v:.2f}")
    shown += ["diff_vs_top", "p_value", "p_worse", "fit_s"]
    tuned = "tuned_vs_default" in frame
    if tuned:
        frame["vs_default"] = frame["tuned_vs_default"].map(lambda v: "" if math.isnan(v) else f"{v:+.4f}")
        shown.insert(shown.index("diff_vs_top"), "vs_default")
    print(f"\nLeaderboard ({board.n_folds}-fold CV, ranked by {board.metric}):")
    print(frame[shown].to_string(index=False))
    print(
        f"  diff_vs_top: mean {board.metric} minus the top one's; p_value: corrected resampled t-test against it; "
        f"p_worse: chance of losing more than the tolerance ({selection.tolerance_basis}) against it, by the Bayesian "
        f"correlated t-test; = practically as good (p_worse at most {selection.alpha * 100:g}%); * chosen"
    )
    if tuned:
        print(f"  vs_default: a :tuned row's mean {board.metric} minus its default's, positive when tuning helped")
    for r in board.rows:
        if r.error:
            print(f"  {r.name} {r.status}: {r.error}")
    ev = result.evaluation
    holdout = ", ".join(f"{k} {v:.4f}" for k, v in ev.holdout.items())
    print(f"\nChosen: {ev.model}, by {selection.reason}")
    print(f"Holdout ({ev.n_test} rows): {holdout}")
    for warning in ev.warnings:
        print(f"Warning: {warning}")
    decision = result.decision
    print(f"Decision: {decision.label.upper()}" + (f": {'; '.join(decision.reasons)}" if decision.reasons else ""))
    for c in decision.checks:
        print(f"  [{'pass' if c.passed else 'FAIL'}] {c.criterion}: {c.detail}")
    print(f"MLflow run {result.run_id} in experiment '{result.experiment}' at {result.tracking_uri}")
    if result.challenge is not None:
        print(f"Against the champion: {result.challenge.alias}: {result.challenge.reason}")
    if result.export_dir is not None:
        print(f"Model: {result.registered or result.model_uri}; exported to {result.export_dir}")
    elif result.challenger:
        print(f"Model: {result.registered}; not exported: the export stays the champion's")
    else:
        print(f"Model: logged as {result.model_uri} only; not registered as champion, not exported (no-go)")
    print(f"To look at it: {_ui_command(result.tracking_uri, result.experiment)}")
    print(f"Done in {elapsed:.1f}s.")


def _ui_command(tracking_uri: str, experiment: str) -> str:
    """The command that shows a run in the MLflow UI."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser (experiment '{experiment}')"
    from pipeline.settings import DEFAULT_TRACKING_URI

    store = "" if tracking_uri == DEFAULT_TRACKING_URI else f" --tracking-uri {tracking_uri}"
    return f"crispml ui{store} --experiment {experiment}"
