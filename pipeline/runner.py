"""The one runner: the phases in order (understand -> prepare -> model -> evaluate -> deploy), each result handed to tracking."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import backends, deploying, retraining
from pipeline.backends import local_pool
from pipeline.config import check_outputs, min_score_problem
from pipeline.errors import ConfigError, DataError, Interrupted
from pipeline.files import read_hashed
from pipeline.phases import FIT, WARNING, Assessed, Drawing, Prepared, Progress, Table
from pipeline.settings import Config
from pipeline.tracking import model_format, store
from pipeline.tracking import runs as tracking
from stages import challenge as challenging
from stages import (
    cleaning,
    deployment,
    evaluation,
    gate,
    model_registry,
    modeling,
    preparation,
    racing,
    reporting,
    tuning,
    understanding,
)
from stages import selection as selecting
from stages.metrics import DEFAULT_METRIC, METRICS

CV_SHARE_OF_BUDGET = 0.7
"""Share of `--time-budget` that cross-validation may use; the rest is kept for evaluation and deployment."""


def _quiet(stage: str, message: str, done: float | None = None) -> None:
    """The default progress sink: says nothing."""


@dataclass(frozen=True)
class RunResult:
    """What a pipeline run produced, for the command line and for tests.

    Attributes:
        profile: Data understanding.
        leaderboard: The cross-validated comparison.
        evaluation: The chosen model's holdout evaluation.
        experiment: MLflow experiment (and registered model) name.
        tracking_uri: The MLflow store.
        run_id: The parent run's id.
        model_uri: The logged model's URI.
        registered: `models:/<name>@champion`, or "" when not registered (always on no-go).
        export_dir: The exported model folder, or None on no-go (nothing is exported).
        selection: Which candidate was chosen from the leaderboard, by which rule, and why.
        decision: The go/no-go gate's decision.
        footprint: The final model's prediction time per row and size.
        model: The chosen pipeline, refitted on every labelled row (what was logged and exported).
        challenge: The new model against the registry's `champion` (`stages.challenge`): promoted
            or `challenger`; None when nothing was registered (no-go, or registration off).
        table: The leaderboard as one row per candidate, annotated with the selection
            (`stages.selection.annotated_leaderboard`): made once, as `leaderboard.csv`, and
            shown as it is by the manifest, `--json`, the printed table and the Python API.
    """

    profile: understanding.DataProfile
    leaderboard: modeling.Leaderboard
    evaluation: evaluation.Evaluation
    experiment: str
    tracking_uri: str
    run_id: str
    model_uri: str
    registered: str
    export_dir: Path | None
    selection: selecting.Selection
    decision: gate.Decision
    footprint: evaluation.Footprint
    model: Any = None
    challenge: challenging.Challenge | None = None
    table: pd.DataFrame | None = None

    @property
    def challenger(self) -> bool:
        """The model passed its gate but not the comparison with the champion: registered as `challenger`, not exported."""
        return self.challenge is not None and not self.challenge.promoted


def run(
    config: Config, progress: Progress = _quiet, started: float | None = None, table: Table | None = None
) -> RunResult:
    """Run the CRISP-DM pipeline: understand, prepare, model, evaluate, deploy.

    The model is registered as `champion` and exported only when the go/no-go gate
    passes; on no-go it is logged to the run and the previous export stays in place.

    Args:
        config: The validated configuration.
        progress: Called with `(stage, message)` as the run goes.
        started: When the run began, as `time.monotonic()`; the time budget counts from it.
            The command line passes its own start, so the budget includes its imports. Default: now.
        table: The data, already read (the Python API passes a DataFrame so); default: the
            file `config.data.path`.

    Returns:
        The run's results.

    Raises:
        CrispmlError: For bad data, configuration or an unusable tracking store; all of
            these are found before any training starts, and bad data before the store is touched.
    """
    started = time.monotonic() if started is None else started
    check_outputs(config)  # the experiment name and the export folder, before the data is read
    budget = config.modeling.time_budget
    # Cross-validation gets most of a time budget; the rest is for the refits, the holdout, logging and export.
    deadline = started + CV_SHARE_OF_BUDGET * budget if budget else None
    if table is None:
        data_path = Path(config.data.path)
        frame, sha256 = read_hashed(data_path)  # the file is read once, and hashed as it is read
        table = Table(frame, str(data_path), sha256)
        del frame
    data_sha256 = table.sha256
    raw_example = table.frame.head(deployment.INPUT_EXAMPLE_ROWS).copy()  # the model's example: rows as read, not cleaned
    prepared = _understand_and_prepare(config, table.frame, table.source, progress)  # phases 1 and 2: understanding, preparation
    rows = retraining.raw_rows(config, prepared, table.frame)  # for the comparison with the champion, on rows as read
    del table  # the features and target are copies; on a million rows the raw table is a few hundred MB

    # Every check on the data is done; the store is checked (and created) before any training,
    # while the worker processes' fork server starts up.
    memory_mb = _memory_mb(config, len(prepared.candidates) * len(prepared.folds))
    if memory_mb is not None or config.modeling.backend != "local":  # local fits without limits run here
        backends.preflight(config.modeling.backend, config.modeling.scheduler)  # a Dask scheduler, before the store
    # The data's plots are drawn in a worker process while this one checks the store and opens the run.
    data_plots = _drawing(partial(reporting.understanding_plots, prepared.profile, prepared.y), "the data's plots", config, memory_mb)
    store.check_store(config.tracking_uri, writable=True)

    run_name = f"{prepared.profile.target} {dt.datetime.now():%Y-%m-%d %H:%M:%S}"
    with tracking.pipeline_run(config.tracking_uri, config.experiment, run_name) as tracker:
        _log_understanding(tracker, config, prepared)
        try:
            board, selection, table = _model(tracker, config, prepared, memory_mb, deadline, progress)
        except Interrupted:
            raise
        except Exception:  # no model: the data's report is what is left to look at
            _log_data_report(tracker, prepared, data_plots.done())
            raise
        _log_data_report(tracker, prepared, data_plots.done())  # its plots were drawn during the cross-validation
        assessed = _evaluate(tracker, config, prepared, board, selection, data_sha256, memory_mb, progress)
        challenge = retraining.against_champion(tracker, config, prepared, assessed, rows, progress) if rows is not None else None
        logged, registered, export_dir = deploying.deploy(
            tracker, config, prepared, board, selection, table, assessed, challenge, raw_example, progress, started
        )
    return RunResult(
        profile=prepared.profile,
        leaderboard=board,
        evaluation=assessed.result,
        experiment=config.experiment,
        tracking_uri=config.tracking_uri,
        run_id=tracker.run_id,
        model_uri=logged.uri,
        registered=registered,
        export_dir=export_dir,
        selection=selection,
        decision=assessed.decision,
        footprint=assessed.footprint,
        model=assessed.final.model,
        challenge=challenge,
        table=table,
    )


def _understand_and_prepare(config: Config, data: pd.DataFrame, source: str, progress: Progress) -> Prepared:
    """Business and data understanding, then preparation: the holdout is set aside before anything is learnt.

    The data step's rules (missing markers, spaces, numbers, dates) are decided from each
    column's values alone, so deciding them on every row before the split leaks nothing.
    """
    cleaned = cleaning.clean_data(data, config.business.target, keep_text=config.data.categorical)
    data = cleaned.frame
    profile = understanding.profile_data(
        data,
        config.business.target,
        config.business.task,
        source=source,
        categorical=config.data.categorical,
        cleaning=cleaned.report,
        seed=config.seed,
    )
    metric = resolve_metric(config.business.metric, profile.task)
    problem = min_score_problem(config.business.min_score, metric)
    if problem:
        raise ConfigError(problem)
    progress("understanding", _describe(profile, metric))
    for warning in profile.warnings:
        progress(WARNING, warning)

    labelled = np.flatnonzero(data[profile.target].notna().to_numpy())  # the rows `features_and_target` keeps
    X, y = preparation.features_and_target(data, profile)
    split = preparation.split_holdout(X, y, profile.task, config.preparation.holdout, config.seed)
    folds = modeling.make_folds(split.y_train, profile.task, config.modeling.folds, config.seed)
    preprocessor = preparation.build_preprocessor(profile, config.preparation)
    settings = model_registry.ModelSettings(profile.task, config.seed, config.modeling.mlp_hidden_layers, len(split.y_train))
    candidates = model_registry.build_candidates(config.modeling.models, preprocessor, settings)
    if config.modeling.tune:  # `<name>:tuned` variants, cross-validated on the same folds as the defaults
        candidates |= tuning.tuned_candidates(candidates, profile.task, metric, config.seed, model_registry.search_spaces())
    progress("preparation", f"{len(split.y_train)} training rows, {len(split.y_test)} holdout rows, {len(folds)} folds")
    return Prepared(profile, metric, X, y, split, folds, preprocessor, settings, candidates, labelled)


def _log_understanding(tracker: tracking.PipelineRun, config: Config, prepared: Prepared) -> None:
    """The config, the business criteria and the data profile: before any training."""
    profile = prepared.profile
    tracker.set_tags({"crispml.task": profile.task, "crispml.metric": prepared.metric, "crispml.target": profile.target})
    tracker.mark_primary_metric(prepared.metric)  # the UI's charts lead with the holdout score
    tracker.log_params(_flatten(config.to_dict()))
    tracker.log_json(config.to_dict(), "config.json")
    tracker.log_json(_business(config, profile, prepared.metric), "business.json")
    tracker.log_json(profile.to_dict(), "understanding/profile.json")


def _log_data_report(tracker: tracking.PipelineRun, prepared: Prepared, data_plots: dict[str, bytes]) -> None:
    """The data profile as people read it, with its plots (`understanding/`)."""
    profile = prepared.profile
    report = reporting.understanding_report(profile, data_plots)
    tracker.log_text(report, "understanding/profile.md")
    # The page MLflow's artifact viewer shows with its plots (the Markdown's image links point nowhere there).
    tracker.log_text(reporting.html_report(f"Data understanding: {profile.source}", report, data_plots), "understanding/profile.html")
    tracker.log_files(data_plots, "understanding")


def _model(
    tracker: tracking.PipelineRun,
    config: Config,
    prepared: Prepared,
    memory_mb: int | None,
    deadline: float | None,
    progress: Progress,
) -> tuple[modeling.Leaderboard, selecting.Selection, pd.DataFrame]:
    """Modeling: every candidate on the same folds, then the selection rule picks one; and the annotated leaderboard."""
    metric, candidates, folds = prepared.metric, prepared.candidates, prepared.folds
    race = None
    if config.modeling.race:  # the selection rule's own test, on the folds so far
        rule = racing.RaceRule.following(config.evaluation, metric, *_fold_sizes(folds))
        race = racing.Race(rule, list(candidates), len(folds))
    model_format.prewarm()  # skops and friends, for logging the model, while the fits run
    progress("modeling", f"cross-validating {', '.join(candidates)} ({len(candidates) * len(folds)} fits"
             f"{'; racing' if race else ''})")
    try:
        board = modeling.compare_models(
            candidates, prepared.split.X_train, prepared.split.y_train, folds, prepared.profile.task, metric,
            backends.executor(config.modeling.backend, config.modeling.n_jobs, config.modeling.scheduler),
            timeout=config.modeling.candidate_timeout or None,
            memory_mb=memory_mb,
            on_candidate=lambda row: _report_candidate(row, metric, progress),
            on_fit=lambda finished, total: progress(FIT, f"{finished}/{total} fits", finished / total),
            deadline=deadline,
            race=race,
        )
    except Interrupted as stop:  # log what finished; the run then ends KILLED
        if isinstance(stop.partial, modeling.Leaderboard):
            _log_candidates(tracker, stop.partial)
            tracker.log_frame(stop.partial.to_frame(), "leaderboard.csv")
        raise
    _log_candidates(tracker, board)
    best = board.best
    if best is None and any(r.status == modeling.UNFINISHED for r in board.rows):
        raise ConfigError(
            f"no candidate finished its cross-validation within the time budget of {config.modeling.time_budget:g} s; "
            "raise --time-budget or leave slow models out with --models"
        )
    if best is None:
        errors = "; ".join(f"{r.name}: {r.error}" for r in board.rows)
        raise DataError(f"every candidate failed to fit ({errors}); check the data or the model list")
    selection = selecting.select_model(board, config.evaluation, *_fold_sizes(folds))
    table = selecting.annotated_leaderboard(board, selection)
    tracker.log_frame(table, "leaderboard.csv")
    tracker.set_tags(
        {
            "crispml.chosen_model": selection.chosen,
            "crispml.selection_rule": selection.rule,
            "crispml.selection_reason": selection.reason[:tracking.TAG_MAX],
        }
    )
    progress("modeling", f"best by cross-validation: {best.name} ({metric} {best.mean(metric):.4f})")
    progress("modeling", f"chosen: {selection.chosen} ({selection.reason})")
    return board, selection, table


def _evaluate(
    tracker: tracking.PipelineRun,
    config: Config,
    prepared: Prepared,
    board: modeling.Leaderboard,
    selection: selecting.Selection,
    data_sha256: str,
    memory_mb: int | None,
    progress: Progress,
) -> Assessed:
    """Evaluation: the chosen model on the untouched holdout against the baseline, then the go/no-go gate."""
    metric, split, candidates = prepared.metric, prepared.split, prepared.candidates
    chosen = next(r for r in board.rows if r.name == selection.chosen)
    floor = (  # the margin is measured against the dummy even when it was not a candidate
        candidates[selecting.BASELINE]
        if selecting.BASELINE in candidates
        else model_registry.build_candidates([selecting.BASELINE], prepared.preprocessor, prepared.settings)[selecting.BASELINE]
    )
    # Three independent fits, side by side in worker processes: the chosen model on the
    # training part (then scored on the holdout), on every row (the model to deploy), and the baseline.
    task = prepared.profile.task
    fits = _run_side_by_side(
        {
            "holdout": partial(
                evaluation.assess_on_holdout, chosen, candidates[chosen.name], split, task, metric,
                config.evaluation.holdout_tolerance_sd, config.seed,
            ),
            "final": partial(modeling.fit_clone, candidates[chosen.name], prepared.X, prepared.y),
            "baseline": partial(evaluation.score_on_holdout, floor, split, task),
        },
        config,
        memory_mb,
    )
    result, importance = fits["holdout"]
    baseline_holdout = fits["baseline"]
    # Drawn in a worker process while this one measures the model, applies the gate and logs the model.
    curve = reporting.training_curve(fits["final"].steps[-1][1])
    plots = _drawing(partial(reporting.evaluation_plots, result, board, selection, importance, curve), "the evaluation plots", config, memory_mb)
    tracker.log_metrics({f"holdout_{k}": v for k, v in result.holdout.items()})
    tracker.log_metrics({f"cv_{k}_mean": v for k, v in result.cv_mean.items()})
    tracker.log_metrics({f"baseline_holdout_{k}": v for k, v in baseline_holdout.items()})
    tracker.log_frame(importance.to_frame(), "permutation_importance.csv")
    if result.warnings:
        tracker.set_tags({"crispml.evaluation_warnings": "\n".join(result.warnings)[:tracking.TAG_MAX]})
    progress("evaluation", f"{chosen.name} on the holdout: {metric} {result.holdout[metric]:.4f}")
    for warning in result.warnings:
        progress("evaluation", f"warning: {warning}")

    # The go/no-go gate: the business criteria, on the holdout and the final model.
    final = deployment.refit_for_deployment(
        candidates[chosen.name], prepared.X, prepared.y, prepared.profile, board, result, data_sha256, config.seed,
        fitted=fits["final"],
    )
    footprint = evaluation.measure_footprint(final.model, split.X_test)
    decision = gate.decide(metric, result.holdout[metric], baseline_holdout[metric], footprint, config.business)
    tracker.log_metrics({"predict_ms_per_row": footprint.ms_per_row, "model_mb": footprint.model_mb})
    tracker.set_tags({"crispml.decision": decision.label})
    if decision.reasons:
        tracker.set_tags({"crispml.decision_reasons": "; ".join(decision.reasons)[:tracking.TAG_MAX]})
    tracker.log_json(decision.to_dict(), "decision.json")
    progress("evaluation", f"gate: {decision.label}" + (f" ({'; '.join(decision.reasons)})" if decision.reasons else ""))
    return Assessed(chosen, result, importance, final, footprint, decision, plots)


def resolve_metric(name: str, task: str) -> str:
    """The primary metric: the configured one, checked against the task, or the task's default.

    Args:
        name: Configured metric name, or "".
        task: The task.

    Returns:
        The metric's name.

    Raises:
        ConfigError: The metric does not fit the task.
    """
    if not name:
        return DEFAULT_METRIC[task]
    if task not in METRICS[name].tasks:
        fitting = [n for n, m in METRICS.items() if task in m.tasks]
        raise ConfigError(f"metric '{name}' does not fit a {task} task; use one of {', '.join(fitting)}")
    return name


def _describe(profile: understanding.DataProfile, metric: str) -> str:
    how = "detected" if profile.task_detected else "from config"
    dropped = f"; dropped {', '.join(profile.dropped)}" if profile.dropped else ""
    return (
        f"{profile.n_rows} rows, {len(profile.features)} features{dropped}; target '{profile.target}' is "
        f"{profile.task} ({how}); ranking by {metric}"
    )


def _run_side_by_side(calls: dict[str, Any], config: Config, memory_mb: int | None) -> dict[str, Any]:
    """Run independent fits in parallel worker processes; any failure stops the run with its reason."""
    outcomes = local_pool.run_calls(calls, config.modeling.n_jobs, memory_mb * 2**20 if memory_mb else None)
    failed = [f"{name}: {o.error}" for name, o in outcomes.items() if o.error]
    if failed:
        raise DataError(
            f"the chosen model could not be refitted after cross-validation ({'; '.join(failed)}); "
            "raise modeling.candidate_memory_mb or leave the model out with --models"
        )
    return {name: o.value for name, o in outcomes.items()}


def _drawing(call: Callable[[], dict[str, bytes]], what: str, config: Config, memory_mb: int | None) -> Drawing:
    """Plots drawn in a worker process while this one goes on (`Drawing.done` collects them)."""
    return Drawing(local_pool.start_calls({"plots": call}, config.modeling.n_jobs, memory_mb * 2**20 if memory_mb else None), what)


def _memory_mb(config: Config, n_tasks: int) -> int | None:
    """The memory limit per worker process: configured, automatic, or None when fits run in this process.

    With one job, no time limit and no memory limit configured, the fits run in the crispml
    process itself, unisolated (for debugging); any limit needs worker processes.
    """
    m = config.modeling
    if m.candidate_memory_mb:
        return m.candidate_memory_mb
    if m.n_jobs == 1 and not m.candidate_timeout:
        return None
    return local_pool.auto_memory_limit(local_pool.worker_count(m.n_jobs, n_tasks)) >> 20


def _candidate_line(row: modeling.CandidateResult, metric: str) -> str:
    if row.status == modeling.RACED_OUT:  # its reason says "raced out after ..."
        return f"{row.name} {row.error}"
    if row.status != modeling.OK:
        return f"{row.name} {row.status}: {row.error}"
    return f"{row.name} done: {metric} {row.mean(metric):.4f} ± {row.std(metric):.4f}"


def _report_candidate(row: modeling.CandidateResult, metric: str, progress: Progress) -> None:
    """A candidate's line as it finishes, and one warning line for each of its fits run again (a Dask worker lost)."""
    progress("modeling", _candidate_line(row, metric))
    for warning in row.warnings:
        if modeling.RETRIED in warning:
            progress(WARNING, f"{row.name}: {warning}")


def _log_candidates(tracker: tracking.PipelineRun, board: modeling.Leaderboard) -> None:
    for row in board.rows:
        raced = row.status == modeling.RACED_OUT  # stopped on purpose: a finished run that says why
        tags = {"crispml.workers": ",".join(dict.fromkeys(w for w in row.workers if w)), "crispml.status": row.status}
        if raced:
            tags["crispml.raced_out"] = row.error
        # What it did about data size; not `strategy`, which is a parameter of the dummy baseline.
        params = {**row.params, "crispml.strategy": row.strategy} if row.strategy else row.params
        tracker.log_candidate(
            row.name, row.estimator, params, row.status == modeling.OK or raced, "" if raced else row.error,
            row.fold_scores, _candidate_metrics(row, board.metrics), row.warnings, tags,
        )


def _candidate_metrics(row: modeling.CandidateResult, metrics: tuple[str, ...]) -> dict[str, float]:
    out = {"fit_seconds": row.fit_seconds, "predict_seconds": row.predict_seconds}
    for m in metrics:
        out[f"{m}_mean"] = row.mean(m)
        out[f"{m}_std"] = row.std(m)
    return out


def _business(config: Config, profile: understanding.DataProfile, metric: str) -> dict[str, object]:
    """The business objective and criteria as the run will judge them (the metric resolved)."""
    b = config.business
    return {
        "objective": b.objective,
        "target": profile.target,
        "task": profile.task,
        "metric": metric,
        "greater_is_better": METRICS[metric].greater_is_better,
        "min_score": b.min_score,
        "min_margin_over_baseline": b.min_margin_over_baseline,
        "max_latency_ms_per_row": b.max_latency_ms_per_row,
        "max_model_mb": b.max_model_mb,
        "selection": config.evaluation.selection,
        "alpha": config.evaluation.alpha,
    }


def _fold_sizes(folds: modeling.Folds) -> tuple[float, float]:
    """Mean training and test rows per fold, for the corrected t-test."""
    return float(np.mean([len(tr) for tr, _ in folds])), float(np.mean([len(te) for _, te in folds]))


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


