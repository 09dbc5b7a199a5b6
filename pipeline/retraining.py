"""Scheduled retraining: the run's model against the registry's champion, on rows neither learnt from.

`challenge` is the step between the gate and deployment when the experiment already has a
`champion`: it loads the champion (files checked), checks it can be compared fairly (same
target and task, the columns it needs, its sealed record of the rows it learnt from), scores
it on the new holdout rows it never saw (its own recorded predictions for rows of its own
holdout) and hands both to `stages.challenge.compare`. A champion that cannot be compared
fairly is `not_compared`, with the reason, and the new model takes its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import first_line
from pipeline.phases import WARNING, Assessed, Prepared, Progress
from pipeline.settings import Config
from pipeline.tracking import loading, registry
from pipeline.tracking import runs as tracking
from stages import challenge as challenging
from stages import contract, evaluation


@dataclass(frozen=True)
class RawRows:
    """The rows as read that the comparison with the champion needs (the prepared ones are cleaned)."""

    holdout: pd.DataFrame  # every column, in the holdout's order
    trained: np.ndarray  # fingerprints of every labelled row: what the deployed model learns from
    columns: tuple[str, ...]  # the columns fingerprinted


def raw_rows(config: Config, prepared: Prepared, raw: pd.DataFrame) -> RawRows | None:
    """The raw holdout rows and the labelled rows' fingerprints, when the model may be registered."""
    if not config.deployment.register:
        return None
    profile = prepared.profile
    columns = challenging.fingerprint_columns([c for c in raw.columns if c in set(_sources(prepared))], profile.target)
    positions = prepared.labelled
    trained = np.unique(challenging.row_fingerprints(raw[list(columns)].iloc[positions], columns))
    holdout = raw.iloc[positions[prepared.split.X_test.index.to_numpy()]].reset_index(drop=True)
    return RawRows(holdout, trained, columns)


def _sources(prepared: Prepared) -> set[str]:
    """The raw columns the features come from (a date's calendar features from the date column)."""
    cleaned = prepared.profile.cleaning
    plan = cleaned.plan if cleaned is not None else None
    return {plan.source_of(f) if plan else f for f in prepared.profile.features}


def against_champion(
    tracker: tracking.PipelineRun,
    config: Config,
    prepared: Prepared,
    assessed: Assessed,
    rows: RawRows,
    progress: Progress,
) -> challenging.Challenge | None:
    """Champion and challenger: the new model against the registry's `champion`, on holdout rows neither learnt from.

    Only a model that passed its gate and is to be registered is compared. The run also
    keeps its own record (fingerprints and holdout predictions), so that later runs can
    compare against it fairly.
    """
    if not assessed.decision.go:
        return None
    result = assessed.result
    record = challenging.champion_record(rows.columns, rows.trained, rows.holdout, result.y_pred, result.proba, result.classes)
    tracker.log_champion_record(record.to_bytes())
    if not config.deployment.challenge:
        outcome = challenging.unchallenged(challenging.NOT_CHALLENGED, "the comparison with the champion is off (--no-challenge)")
    else:
        champion = tracker.champion(config.experiment)
        outcome = (
            challenging.unchallenged(challenging.FIRST, f"no champion in `{config.experiment}` yet: this model is the first")
            if champion is None
            else _against(champion, config, prepared, result, rows.holdout)
        )
    tracker.log_json(outcome.to_dict(), "challenge.json")
    tracker.set_tags({"crispml.challenge": outcome.outcome, "crispml.challenge_reason": outcome.reason[:tracking.TAG_MAX]})
    tracker.log_metrics(
        {"champion_holdout_score": outcome.champion_score, "challenger_holdout_score": outcome.new_score, "challenge_p_worse": outcome.p_worse}
    )
    # Uncompared is worth a warning; a challenger's reason is the run's last line on stderr (the command line prints it).
    stage = WARNING if outcome.outcome == challenging.NOT_COMPARED else "evaluation"
    progress(stage, f"{'champion' if outcome.promoted else 'challenger'}: {outcome.reason}")
    return outcome


def _comparable_record(
    champion: registry.Champion, target: str, classes: Any, prepared: Prepared, result: evaluation.Evaluation
) -> challenging.ChampionRecord | str:
    """The champion's record of the rows it learnt from, when it can be compared with this run's model; else why not."""
    if target and target != prepared.profile.target:
        return f"predicts `{target}`, this run `{prepared.profile.target}`"
    if (classes is None) != (result.classes is None):
        return f"is a {'regression' if classes is None else 'classification'} model, this run's task is {prepared.profile.task}"
    # Without its record nothing says which of these rows the champion learnt from: scored on
    # them it would look better than it is, and no later run could ever replace it.
    if champion.record_problem:
        return f"has a {registry.CHAMPION_RECORD} that {champion.record_problem}"
    if champion.record is None:
        return f"has no {registry.CHAMPION_RECORD} of the rows it learnt from (logged by an older crispml?)"
    try:
        return challenging.ChampionRecord.from_bytes(champion.record)
    except ValueError as exc:
        return f"has an unusable {registry.CHAMPION_RECORD} ({exc})"


def _against(
    champion: registry.Champion,
    config: Config,
    prepared: Prepared,
    result: evaluation.Evaluation,
    holdout: pd.DataFrame,
) -> challenging.Challenge:
    """Score the champion on the new holdout's rows it never learnt from, and compare."""
    version = champion.version

    def not_compared(why: str) -> challenging.Challenge:
        return challenging.unchallenged(
            challenging.NOT_COMPARED, f"champion version {version} {why}: the new model takes its place uncompared", version
        )

    try:
        loaded = loading.load_model(champion.uri, config.tracking_uri)
    except Exception as exc:  # noqa: BLE001  (whatever keeps the champion from loading, it cannot be compared)
        return not_compared(f"cannot be loaded ({first_line(exc)[:300]})")
    theirs, classes = loaded.contract, getattr(loaded.model, "classes_", None)
    record = _comparable_record(champion, theirs.target, classes, prepared, result)
    if isinstance(record, str):
        return not_compared(record)
    missing = sorted({c for c in (*theirs.inputs, *record.columns) if c not in holdout.columns}, key=str)
    if missing:
        return not_compared(f"needs column(s) the new data lacks: {', '.join(map(str, missing))}")
    keys = challenging.row_fingerprints(holdout, record.columns)
    sources = challenging.fair_rows(record, keys)
    parts, positions = [], []
    if len(sources.live):
        try:
            scored = contract.score(loaded.model, holdout.iloc[sources.live][list(theirs.inputs)].reset_index(drop=True), theirs)
        except Exception as exc:  # noqa: BLE001  (a contract error, or a model this environment cannot run)
            return not_compared(f"cannot score the new holdout ({first_line(exc)[:300]})")
        parts.append(challenging.scored_predictions(scored.frame, classes))
        positions.append(sources.live)
    if len(sources.recorded):
        parts.append(challenging.recorded_predictions(record, sources.record_index))
        positions.append(sources.recorded)
    at = np.concatenate(positions) if positions else np.array([], dtype=int)
    new = challenging.Predictions(
        result.y_pred[at],
        None if result.proba is None else result.proba[at],
        None if result.classes is None else tuple(result.classes.tolist()),
    )
    return challenging.compare(
        prepared.metric,
        result.y_true[at],
        new,
        challenging.combined(parts, len(at)),
        config.evaluation,
        champion_version=version,
        rows_left_out=sources.left_out,
    )
