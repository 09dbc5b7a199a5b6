"""Deployment, the run's last phase: log the final model, write its card and manifest, and on go register and export it.

`deploy` keeps the registry, the export and the run in step whatever stops the run (see its
docstring for the order); a challenger is registered but not exported, and a no-go model is
only logged to its run.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import paths
from pipeline.exports import export_model_dir
from pipeline.phases import WARNING, Assessed, Prepared, Progress
from pipeline.settings import Config
from pipeline.tracking import loading, registry
from pipeline.tracking import runs as tracking
from stages import challenge as challenging
from stages import contract, model_registry, modeling, reporting
from stages import selection as selecting
from stages.deployment import json_safe
from stages.model_card import model_card

MODEL_CARD = "model_card.md"
MODEL_CARD_HTML = "model_card.html"
"""The model card with the evaluation plots inside it: the page MLflow's artifact viewer shows."""


def deploy(
    tracker: tracking.PipelineRun,
    config: Config,
    prepared: Prepared,
    board: modeling.Leaderboard,
    selection: selecting.Selection,
    table: pd.DataFrame,
    assessed: Assessed,
    challenge: challenging.Challenge | None,
    raw_example: pd.DataFrame,
    progress: Progress,
    started: float,
) -> tuple[tracking.LoggedModel, str, Path | None]:
    """Log the final model; on go, export it, register it, make it champion.

    The order keeps the registry, the export and the run in step whatever stops the run:
    the model is logged to the run unregistered; the export folder is written beside the
    old one; a new registry version is created and the manifest names it; the folder moves
    into place; the run ends FINISHED; only then does `champion` move to the new version
    (`PipelineRun.commit`). An error or a signal before that puts the old folder back,
    deletes the new version and ends the run FAILED or KILLED, and a process killed
    outright leaves `champion` on a run that finished, or where it was.
    """
    # 66 lines: the steps' order is the protocol above, kept in one function so that it reads in one place.
    final, decision = assessed.final, assessed.decision
    name, description = _described(config, prepared, selection, assessed, challenge)
    tracker.describe(name, description)  # the runs page tells runs apart; each run page says what it chose
    requirements = _requirements(final.manifest["packages"])
    register = config.deployment.register and decision.go
    challenger = challenge is not None and not challenge.promoted  # registered, not exported: the champion stays
    metadata = {contract.CONTRACT_KEY: final.contract.to_dict()}
    tracker.log_json(final.contract.to_dict(), "contract.json")
    # The example is raw rows, as a file like the training file reads: what the shipped pyfunc loader takes.
    example = raw_example.loc[:, list(final.contract.inputs)]
    logged = tracker.log_model(final.model, example, requirements, model_registry.trusted_types(), metadata)
    plots = assessed.plots.done()  # drawn in a worker process while the model was logged
    tracker.log_files(plots, "plots")
    # The card names the alias, which is this model's once the run commits; the manifest names the version.
    alias = registry.CHALLENGER if challenger else registry.CHAMPION
    registered = f"models:/{config.experiment}@{alias}" if register else ""
    target = paths.export_target(config.deployment.out, config.experiment)
    exported = decision.go and not challenger
    card = _card(config, prepared, board, selection, assessed, challenge, logged.uri, registered, _shown(target) if exported else "")
    tracker.log_text(card, MODEL_CARD)
    tracker.log_text(reporting.html_report(f"Model card: {config.experiment}", card, plots), MODEL_CARD_HTML)
    manifest = _manifest(config, table, selection, assessed, challenge, tracker.run_id, logged.uri)
    if not decision.go:
        tracker.log_json(manifest, "manifest.json")
        if late := _budget_tags(config, started, selection.chosen, progress):
            tracker.set_tags(late)
        progress("deployment", f"no-go: model logged as {logged.uri}; not registered as champion, not exported")
        return logged, "", None

    # Once the export's files are written, just before it moves in.
    register_version = partial(_register_version, tracker, logged, config, prepared, description, manifest, register)

    if challenger:  # registered as `challenger`; the champion's export stays where it is
        register_version()
        tracker.commit(_budget_tags(config, started, selection.chosen, progress), alias=registry.CHALLENGER)
        progress("deployment", f"model {registered} registered; not exported: the export stays the champion's")
        return logged, registered, None

    def commit() -> None:  # once the new folder is in place; if this fails, the old one goes back
        tags = _budget_tags(config, started, selection.chosen, progress)
        tracker.commit({**tags, "crispml.export_dir": str(target.resolve())})

    extra = {MODEL_CARD: card.encode("utf-8"), **{f"plots/{name}": png for name, png in plots.items()}}
    export_dir = export_model_dir(
        target,
        lambda folder: loading.copy_logged_model(logged.uri, folder, config.tracking_uri),
        final.model,
        manifest,
        extra,
        register=register_version,
        commit=commit,
    )
    progress("deployment", f"model {registered or logged.uri} exported to {export_dir}")
    return logged, registered, export_dir


def _register_version(
    tracker: tracking.PipelineRun,
    logged: tracking.LoggedModel,
    config: Config,
    prepared: Prepared,
    description: str,
    manifest: dict[str, Any],
    register: bool,
) -> dict[str, Any]:
    """Create the registry version (when registering) and log the manifest that names it; the export's manifest entry."""
    model_description = (
        f"crispml models that predict `{prepared.profile.target}` ({prepared.profile.task}) from experiment "
        f"`{config.experiment}`, ranked by {prepared.metric}. `champion` is the version deployed; `challenger` the "
        "latest that passed its gate but not the comparison with the champion. Each version's description says "
        "which candidate it is, why it was chosen, its holdout score, the gate, the comparison and its data."
    )
    version = (
        tracker.register(logged, config.experiment, description=description, model_description=model_description).version
        if register
        else ""
    )
    entry = {**manifest["mlflow"], "registered_model": config.experiment if register else "", "version": version}
    tracker.log_json({**manifest, "mlflow": entry}, "manifest.json")
    return {"mlflow": entry}


def _card(
    config: Config,
    prepared: Prepared,
    board: modeling.Leaderboard,
    selection: selecting.Selection,
    assessed: Assessed,
    challenge: challenging.Challenge | None,
    model_uri: str,
    registered: str,
    export_dir: str,
) -> str:
    """The model card: what was chosen, how, and how far it can be trusted (`stages.model_card`)."""
    final = assessed.final
    return model_card(
        experiment=config.experiment,
        objective=config.business.objective,
        profile=prepared.profile,
        data_sha256=final.manifest["data"]["sha256"],
        leaderboard=board,
        selection=selection,
        evaluation=assessed.result,
        decision=assessed.decision,
        footprint=assessed.footprint,
        importance=assessed.importance,
        estimator=final.manifest["estimator"],
        candidate_warnings=assessed.chosen.warnings,
        model_uri=model_uri,
        registered=registered,
        export_dir=export_dir,  # never the training machine's folders
        hyperparameters=final.manifest["hyperparameters"],
        challenge=challenge.to_dict() if challenge is not None else None,
    )


def _manifest(
    config: Config,
    table: pd.DataFrame,
    selection: selecting.Selection,
    assessed: Assessed,
    challenge: challenging.Challenge | None,
    run_id: str,
    model_uri: str,
) -> dict[str, Any]:
    """The export's `manifest.json`, before registration fills in the version."""
    footprint = assessed.footprint
    return json_safe(
        {
            **assessed.final.manifest,
            "leaderboard": table.to_dict(orient="records"),
            "selection": selection.to_dict(),
            "decision": assessed.decision.to_dict(),
            "challenge": challenge.to_dict() if challenge is not None else None,
            "footprint": {"predict_ms_per_row": footprint.ms_per_row, "model_mb": footprint.model_mb},
            "warnings": list(assessed.result.warnings),
            "mlflow": {
                "tracking_uri": config.tracking_uri,
                "experiment": config.experiment,
                "run_id": run_id,
                "model_uri": model_uri,
                "registered_model": "",
                "version": "",
            },
        }
    )


def _shown(path: Path) -> str:
    """A path as the model card shows it: relative to the folder the run started in (as given, on another drive)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # Windows: another drive has no relative path
        return str(path)


def _described(
    config: Config,
    prepared: Prepared,
    selection: selecting.Selection,
    assessed: Assessed,
    challenge: challenging.Challenge | None,
) -> tuple[str, str]:
    """The parent run's name and markdown description: what was chosen, how good, the gate, the data."""
    result, decision, metric = assessed.result, assessed.decision, prepared.metric
    score = result.holdout.get(metric, math.nan)
    # Short, most telling first: the runs table cuts a long name at about 20 characters.
    label = registry.CHALLENGER if challenge is not None and not challenge.promoted else decision.label
    name = f"{selection.chosen} {score:.4f} {label} {dt.datetime.now():%Y-%m-%d %H:%M}"
    final = assessed.final.manifest
    lines = [
        f"**Chosen:** `{selection.chosen}` ({final['estimator']}) by `{selection.rule}`: {selection.reason}",
        "",
        f"**Holdout {metric}:** {score:.4f} on {result.n_test} rows (cross-validated "
        f"{result.cv_mean.get(metric, math.nan):.4f} ± {result.cv_std.get(metric, math.nan):.4f})",
        "",
        f"**Gate:** {decision.label}" + (f": {'; '.join(decision.reasons)}" if decision.reasons else ""),
        "",
        f"**Data:** `{Path(prepared.profile.source).name}`, {prepared.profile.n_rows} rows, target "
        f"`{prepared.profile.target}` ({prepared.profile.task}), SHA-256 `{final['data']['sha256']}`",
    ]
    if challenge is not None:
        lines += ["", f"**Against the champion:** `{challenge.alias}`: {challenge.reason}"]
    return name, "\n".join(lines)


def _budget_tags(config: Config, started: float, chosen: str, progress: Progress) -> dict[str, str]:
    """A warning, and the tag that records it, when the run has gone over its time budget."""
    budget = config.modeling.time_budget
    spent = time.monotonic() - started
    if not budget or spent <= budget:
        return {}
    late = f"the run took {spent:.0f} s, over its time budget of {budget:g} s"
    progress(WARNING, f"{late}: refitting and exporting {chosen} took longer than the budget left for it")
    return {"crispml.budget_warning": late}


def _requirements(packages: dict[str, str]) -> list[str]:
    return [f"{name}=={version}" for name, version in packages.items() if name != "python" and version != "unknown"]
