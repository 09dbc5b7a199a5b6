"""The one runner: calls the CRISP-DM stages in order and hands each result to tracking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


from pipeline import tracking
from pipeline.config import Config
from pipeline.errors import ConfigError, DataError
from pipeline.files import export_model_dir, read_table, write_table
from stages import deployment, evaluation, modeling, preparation, understanding
from stages.metrics import DEFAULT_METRIC, METRICS

Progress = Callable[[str, str], None]


def _quiet(stage: str, message: str) -> None:
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
        registered: `models:/<name>@champion`, or "" when not registered.
        export_dir: The exported model folder.
    """

    profile: understanding.DataProfile
    leaderboard: modeling.Leaderboard
    evaluation: evaluation.Evaluation
    experiment: str
    tracking_uri: str
    run_id: str
    model_uri: str
    registered: str
    export_dir: Path


def run(config: Config, progress: Progress = _quiet) -> RunResult:
    """Run the CRISP-DM pipeline: understand, prepare, model, evaluate, deploy.

    Args:
        config: The validated configuration.
        progress: Called with `(stage, message)` as the run goes.

    Returns:
        The run's results.

    Raises:
        CrispmlError: For bad data, configuration or an unusable tracking store; all of
            these are found before any training starts, and bad data before the store is touched.
    """
    data_path = Path(config.data.path)
    data = read_table(data_path)

    # 1. Business and data understanding.
    profile = understanding.profile_data(data, config.business.target, config.business.task, source=str(data_path))
    metric = resolve_metric(config.business.metric, profile.task)
    progress("understanding", _describe(profile, metric))

    # 2. Data preparation: the holdout is set aside before anything is learnt.
    X, y = preparation.features_and_target(data, profile)
    split = preparation.split_holdout(X, y, profile.task, config.preparation.holdout, config.seed)
    folds = modeling.make_folds(split.y_train, profile.task, config.modeling.folds, config.seed)
    preprocessor = preparation.build_preprocessor(
        profile, config.preparation.rare_category_share, config.preparation.max_categories
    )
    settings = modeling.ModelSettings(profile.task, config.seed, config.modeling.mlp_hidden_layers, len(split.y_train))
    candidates = modeling.build_candidates(config.modeling.models, preprocessor, settings)
    progress("preparation", f"{len(split.y_train)} training rows, {len(split.y_test)} holdout rows, {len(folds)} folds")

    # Every check on the data is done; the store is checked (and created) before any training.
    tracking.check_store(config.tracking_uri)

    run_name = f"{profile.target} {dt.datetime.now():%Y-%m-%d %H:%M:%S}"
    with tracking.pipeline_run(config.tracking_uri, config.experiment, run_name) as tracker:
        tracker.set_tags({"crispml.task": profile.task, "crispml.metric": metric, "crispml.target": profile.target})
        tracker.log_params(_flatten(config.to_dict()))
        tracker.log_json(config.to_dict(), "config.json")
        tracker.log_json(profile.to_dict(), "understanding/profile.json")
        tracker.log_text(profile.to_markdown(), "understanding/profile.md")

        # 3. Modeling: every candidate on the same folds.
        progress("modeling", f"cross-validating {', '.join(candidates)} ({len(candidates) * len(folds)} fits)")
        board = modeling.compare_models(
            candidates, split.X_train, split.y_train, folds, profile.task, metric, config.modeling.n_jobs
        )
        for row in board.rows:
            tracker.log_candidate(
                row.name, row.estimator, row.params, row.status == modeling.OK, row.error,
                row.fold_scores, _candidate_metrics(row, board.metrics), row.warnings,
            )
        tracker.log_frame(board.to_frame(), "leaderboard.csv")
        best = board.best
        if best is None:
            errors = "; ".join(f"{r.name}: {r.error}" for r in board.rows)
            raise DataError(f"every candidate failed to fit ({errors}); check the data or the model list")
        progress("modeling", f"best by cross-validation: {best.name} ({metric} {best.mean(metric):.4f})")

        # 4. Evaluation on the untouched holdout.
        result = evaluation.evaluate_holdout(best, candidates[best.name], split, profile.task, metric)
        tracker.set_tags({"crispml.chosen_model": best.name})
        tracker.log_metrics({f"holdout_{k}": v for k, v in result.holdout.items()})
        tracker.log_metrics({f"cv_{k}_mean": v for k, v in result.cv_mean.items()})
        progress("evaluation", f"{best.name} on the holdout: {metric} {result.holdout[metric]:.4f}")

        # 5. Deployment: refit on every labelled row, log, register, export.
        final = deployment.refit_for_deployment(
            candidates[best.name], X, y, profile, board, result, deployment.sha256_of(data_path), config.seed
        )
        requirements = _requirements(final.manifest["packages"])
        registered_name = config.experiment if config.deployment.register else ""
        logged = tracker.log_model(final.model, final.input_example, requirements, registered_name)
        manifest = {
            **final.manifest,
            "mlflow": {
                "tracking_uri": config.tracking_uri,
                "experiment": config.experiment,
                "run_id": tracker.run_id,
                "model_uri": logged.uri,
                "registered_model": logged.registered_name,
                "version": logged.version,
            },
        }
        export_dir = export_model_dir(
            Path(config.deployment.out) / config.experiment / "model",
            lambda folder: tracking.save_model_dir(final.model, folder, final.input_example, requirements),
            final.model,
            manifest,
        )
        tracker.log_json(manifest, "manifest.json")
        tracker.set_tags({"crispml.export_dir": str(export_dir.resolve())})
        registered = f"models:/{logged.registered_name}@{tracking.CHAMPION}" if logged.registered_name else ""
        progress("deployment", f"model {registered or logged.uri} exported to {export_dir}")
    return RunResult(
        profile=profile,
        leaderboard=board,
        evaluation=result,
        experiment=config.experiment,
        tracking_uri=config.tracking_uri,
        run_id=tracker.run_id,
        model_uri=logged.uri,
        registered=registered,
        export_dir=export_dir,
    )


def predict(model: str, data_path: Path, out_path: Path, tracking_uri: str, overwrite: bool) -> int:
    """Batch scoring: load a saved model, score a file, write the scored rows.

    Args:
        model: A model folder or URI.
        data_path: Rows to score (CSV or Parquet).
        out_path: Where to write them with `prediction` (and `proba_<class>`) columns.
        tracking_uri: The store for `models:/` and `runs:/` URIs.
        overwrite: Replace an existing output file.

    Returns:
        The number of rows scored.

    Raises:
        CrispmlError: The model, the data or the output path is unusable.
    """
    if Path(out_path).resolve() == Path(data_path).resolve():
        raise DataError(f"--out {out_path} is the input file; write the scores to another file")
    loaded = tracking.load_model(model, tracking_uri)
    data = read_table(Path(data_path))
    scored = deployment.score(loaded.model, data, loaded.features, loaded.numeric)
    write_table(scored, Path(out_path), overwrite)
    return len(scored)


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


def _candidate_metrics(row: modeling.CandidateResult, metrics: tuple[str, ...]) -> dict[str, float]:
    out = {"fit_seconds": row.fit_seconds, "predict_seconds": row.predict_seconds}
    for m in metrics:
        out[f"{m}_mean"] = row.mean(m)
        out[f"{m}_std"] = row.std(m)
    return out


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _requirements(packages: dict[str, str]) -> list[str]:
    return [f"{name}=={version}" for name, version in packages.items() if name != "python" and version != "unknown"]

