"""The model card: what the chosen model is, how it was chosen and how far it can be trusted, in Markdown.

It is written from the run's results only (profile, leaderboard, selection, holdout, gate,
importance, footprint, the comparison with the champion), so the card says what the run did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.evaluation import Evaluation, Footprint
from stages.gate import Decision
from stages.importance import Importance
from stages.modeling import RACED_OUT, Leaderboard
from stages.selection import Selection
from stages.tuning import is_tuned
from stages.understanding import DataProfile


def model_card(
    *,
    experiment: str,
    objective: str,
    profile: DataProfile,
    data_sha256: str,
    leaderboard: Leaderboard,
    selection: Selection,
    evaluation: Evaluation,
    decision: Decision,
    footprint: Footprint,
    importance: Importance | None,
    estimator: str,
    candidate_warnings: tuple[str, ...],
    model_uri: str,
    registered: str,
    export_dir: str,
    hyperparameters: dict[str, Any] | None = None,
    challenge: Mapping[str, Any] | None = None,
) -> str:
    """The model card: what the model is for, what it learnt from, how it was chosen, how good it is, and how to call it.

    Args:
        experiment: The experiment (and registered model) name.
        objective: The business objective in the user's words ("" for a generated one).
        profile: The data profile.
        data_sha256: Hash of the data file.
        leaderboard: The comparison.
        selection: How the model was chosen from it.
        evaluation: The chosen model's holdout evaluation.
        decision: The go/no-go gate's decision.
        footprint: The final model's prediction time and size.
        importance: Permutation importance on the holdout, or None.
        estimator: The final estimator's class name.
        candidate_warnings: Warnings raised while the chosen candidate was fitted.
        model_uri: Where the model was logged in MLflow.
        registered: `models:/<name>@champion`, or "" when not registered.
        export_dir: The export folder, or "" when not exported.
        hyperparameters: The final estimator's, flattened (`hyperparameters`).
        challenge: The comparison with the registry's champion (`Challenge.to_dict`), or None.

    Returns:
        Markdown. The data file is named by its file name and hash only, never the
        training machine's folders.
    """
    metric = leaderboard.metric
    lines = [
        *_intended_use(experiment, objective, profile, evaluation, estimator, selection, decision, metric),
        *_data_section(profile, data_sha256, evaluation),
        *_choice_section(leaderboard, selection, hyperparameters, estimator),
        *_holdout_section(evaluation, footprint, importance),
        *_challenge_section(challenge),
        *_limitations(profile, evaluation, candidate_warnings, decision, leaderboard),
        *_usage(profile, model_uri, registered, export_dir, challenge),
    ]
    return "\n".join(lines) + "\n"


def _intended_use(experiment: str, objective: str, profile: DataProfile, evaluation: Evaluation, estimator: str, selection: Selection, decision: Decision, metric: str) -> list[str]:
    """The title, the decision, what the model is for and the business criteria."""
    verdict = "GO" if decision.go else "NO-GO"
    lines: list[str] = [
        f"# Model card: {experiment}",
        "",
        f"**Model:** `{evaluation.model}` ({estimator}), chosen by `{selection.rule}`.  ",
        f"**Decision: {verdict}**" + ("" if decision.go else f": {'; '.join(decision.reasons)}"),
        "",
        "## Intended use",
        "",
        objective
        or f"Predict `{profile.target}` ({profile.task}) for new rows shaped like {profile.source}, judged by {metric}.",
        "",
        "Business criteria, written down before training and checked on the holdout:",
        "",
        "| criterion | required | measured | holds |",
        "|---|---|---|---|",
    ]
    for c in decision.checks:
        lines.append(f"| {c.criterion} | {_required(c.criterion, c.threshold, metric)} | {c.value:.4g} | {'yes' if c.passed else '**no**'} |")
    return lines


def _data_section(profile: DataProfile, data_sha256: str, evaluation: Evaluation) -> list[str]:
    """What the model learnt from, and what the data step did."""
    lines: list[str] = [
        "",
        "## Data",
        "",
        f"- file: `{Path(profile.source).name}` (SHA-256 `{data_sha256}`)",
        f"- rows: {profile.n_rows} ({profile.n_rows - profile.target_missing} labelled), columns: {profile.n_columns}",
        f"- target: `{profile.target}`, task: {profile.task}",
        f"- features: {', '.join(f'`{f}`' for f in profile.features)}",
        f"- training part: {evaluation.n_train} rows; holdout: {evaluation.n_test} rows, never seen during selection",
    ]
    if profile.class_balance:
        lines.append("- class balance: " + ", ".join(f"{c}: {n}" for c, n in profile.class_balance))
    lines += ["", "### What the data step did", "", *_data_step_lines(profile)]
    return lines


def _choice_section(leaderboard: Leaderboard, selection: Selection, hyperparameters: dict[str, Any] | None, estimator: str) -> list[str]:
    """How the model was chosen: the rule, the leaderboard, its hyperparameters."""
    metric = leaderboard.metric
    lines: list[str] = [
        "",
        "## How the model was chosen",
        "",
        f"{leaderboard.n_folds}-fold cross-validation on identical folds, ranked by mean {metric}. "
        "A simpler candidate is preferred to the top one only when it is practically as good: the Bayesian "
        "correlated t-test (Benavoli et al., 2017) on its paired fold scores gives it at most a "
        f"{selection.alpha:.0%} chance of losing more than the tolerance ({selection.tolerance_basis}). "
        "The p-value (corrected resampled t-test, Nadeau and Bengio, 2003) is shown for information."
        + (
            " Candidates raced out stopped early, once the same test on their first folds showed they could "
            "not be chosen; their scores cover those folds only."
            if any(r.status == RACED_OUT for r in leaderboard.rows)
            else ""
        ),
        "",
        f"> {selection.reason}",
        "",
        f"| rank | model | {metric} mean ± sd | diff vs top | p-value | chance of losing more than the tolerance | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, r in enumerate(leaderboard.rows, start=1):
        c = selection.comparison(r.name)
        if c is None and r.status == RACED_OUT:
            folds = len(r.fold_scores.get(metric, ()))
            lines.append(
                f"| {rank} | {r.name} | {r.mean(metric):.4f} ± {_num(r.std(metric))} (first {folds} folds) | | | "
                f"raced out: {r.error.split(': ', 1)[-1]} | |"
            )
            continue
        if c is None:
            lines.append(f"| {rank} | {r.name} | {r.status}: {r.error[:80]} | | | | |")
            continue
        lines.append(
            f"| {rank} | {r.name} | {r.mean(metric):.4f} ± {_num(r.std(metric))} | {c.mean_diff:+.4f} | {c.p_value:.3g} | "
            f"{c.p_worse:.1%}{' (practically as good)' if c.equivalent and r.name != selection.top else ''} | "
            f"{'**yes**' if r.name == selection.chosen else ''} |"
        )
    if hyperparameters:
        lines += ["", f"The chosen model's hyperparameters ({estimator}):", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | `{_short(v)}` |" for k, v in hyperparameters.items()]
    return lines


def _holdout_section(evaluation: Evaluation, footprint: Footprint, importance: Importance | None) -> list[str]:
    """The holdout scores beside the cross-validated ones, its cost, and what it relies on."""
    lines: list[str] = [
        "",
        "## Holdout evaluation",
        "",
        f"The chosen model refitted on the training part and scored on the {evaluation.n_test} holdout rows.",
        "",
        "| metric | cross-validated | holdout |",
        "|---|---|---|",
    ]
    for name, value in evaluation.holdout.items():
        lines.append(f"| {name} | {_num(evaluation.cv_mean[name])} ± {_num(evaluation.cv_std[name])} | {_num(value)} |")
    lines.append("")
    lines.append(
        f"Prediction takes {footprint.ms_per_row:.4f} ms per row (holdout in one batch); the model is {footprint.model_mb:.3f} MB pickled."
    )
    if importance is not None and importance.features:
        lines += ["", f"Most important input columns (drop in holdout {importance.metric} when shuffled):", ""]
        lines += [f"- `{f}`: {m:.4f} ± {s:.4f}" for f, m, s in list(zip(importance.features, importance.mean, importance.std))[:10]]
        if importance.note:
            lines += ["", f"(Importance {importance.note}.)"]
    return lines


def _challenge_section(challenge: Mapping[str, Any] | None) -> list[str]:
    """The comparison with the registry's champion, when there was one."""
    lines: list[str] = []
    if challenge is not None:
        lines += ["", "## Against the champion", "", f"Registered as `{challenge['alias']}`: {challenge['reason']}."]
        if challenge.get("rows"):
            lines += [
                "",
                f"Both models scored on the same {challenge['rows']} holdout rows that neither learnt from "
                f"({challenge['rows_left_out']} rows the champion learnt from left out), compared row by row: "
                f"{challenge['metric']} {_num(challenge['new_score'])} (this model) against "
                f"{_num(challenge['champion_score'])} (champion version {challenge['champion_version']}).",
            ]
    return lines


def _limitations(profile: DataProfile, evaluation: Evaluation, candidate_warnings: tuple[str, ...], decision: Decision, leaderboard: Leaderboard) -> list[str]:
    """Every warning of the run, and what the scores cannot say."""
    limitations = [
        *profile.warnings,
        *evaluation.warnings,
        *(f"while fitting {evaluation.model}: {w}" for w in candidate_warnings),
        *(f"the gate failed: {r}" for r in decision.reasons),
        f"scores are estimates from {evaluation.n_test} holdout rows and {leaderboard.n_folds} folds; "
        "rows unlike the training data (new categories, values outside the seen ranges) may score worse",
        (
            "tuned variants (`:tuned`) searched a small space per candidate by successive halving inside each "
            "training fold; the chosen model's setting is in manifest.json (`tuning`)"
            if any(is_tuned(r.name) for r in leaderboard.rows)
            else "candidates use default hyperparameters; none was tuned"
        ),
    ]
    return ["", "## Limitations", "", *(f"- {w}" for w in limitations)]


def _usage(profile: DataProfile, model_uri: str, registered: str, export_dir: str, challenge: Mapping[str, Any] | None) -> list[str]:
    """How to load and call the model, from where it went."""
    source = registered or export_dir or model_uri  # the registry's name works on any machine
    columns = ", ".join(f"`{f}`" for f in profile.features)
    plan = profile.cleaning.plan if profile.cleaning is not None else None
    raw = ", ".join(f"`{f}`" for f in dict.fromkeys(plan.source_of(f) if plan else f for f in profile.features))
    lines: list[str] = [
        "",
        "## How to load and call it",
        "",
        f"`crispml predict` and `crispml serve` take rows as raw as the training file, with the columns {raw}, "
        "and read them as training did (the data step above, saved in the model's data contract); other columns "
        "are ignored.",
        "",
        "`mlflow.pyfunc.load_model` and `mlflow models serve` take the same raw rows (as pandas reads such a file: "
        "an integer column as integers, or floats once a value is missing), check them against the same contract, and "
        "answer the same columns as `crispml predict` adds: `prediction` and, for a classifier, `proba_<class>`. "
        "They need MLflow, scikit-learn and pandas only, not crispml (the model carries its loader, `code/crispml_pyfunc.py`). "
        f"After the data step the model's features are {columns}.",
        "",
    ]
    if not export_dir and challenge is not None:
        lines += [
            "This model passed its gate but not the comparison with the champion: it is registered as "
            "`challenger`, not exported; the champion stays deployed.",
            "",
        ]
    elif not export_dir:
        lines += [
            "This model failed the gate: it is logged to its MLflow run only, neither registered as "
            "`champion` nor exported. Load it from the run to inspect it, not to deploy it.",
            "",
        ]
    lines += [
        "```python",
        "import mlflow",
        "import pandas as pd",
        f'model = mlflow.pyfunc.load_model("{source}")',
        'scored = model.predict(pd.read_csv("new.csv"))  # prediction and proba_<class>, one row per input row',
        "```",
        "",
        "```bash",
        f"crispml predict --model {source} --data new.csv --out scored.csv",
        "```",
    ]
    if export_dir:
        lines += ["", f"Exported to `{export_dir}`" + (f"; registered as `{registered}`." if registered else ".")]
    lines.append(f"Logged model: `{model_uri}`.")
    return lines


def _short(value: Any, width: int = 80) -> str:
    text = str(value).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= width else text[: width - 3] + "..."


def _data_step_lines(profile: DataProfile) -> list[str]:
    """The data step, one bullet per rule that did something: read, parsed, re-typed, expanded, dropped, flagged."""
    report = profile.cleaning
    lines = []
    if report is not None:
        if report.missing:
            lines.append(
                "- read as missing (markers such as `?`, `NA`, `-`, blank): "
                + ", ".join(f"`{c.column}` {c.cells} cells (e.g. {c.example})" for c in report.missing)
            )
        if report.stripped:
            lines.append("- spaces stripped around text: " + ", ".join(f"`{c.column}` {c.cells} cells" for c in report.stripped))
        if report.plan.numbers:
            separated = {c.column: f" ({c.cells} cells with thousands separators, e.g. {c.example})" for c in report.thousands}
            lines.append("- text read as numbers: " + ", ".join(f"`{n}`{separated.get(n, '')}" for n in report.plan.numbers))
        if report.retyped:
            lines.append(
                "- mostly numbers but used as categories: "
                + ", ".join(f"`{r.column}` ({r.numbers} numbers, {r.text} text values such as {r.text_example})"
                            for r in report.retyped)
            )
        if report.expanded:
            unparsed = {c.column: c.cells for c in report.unparsed if c.cells}
            lines.append(
                "- dates turned into calendar features: "
                + "; ".join(
                    f"`{d.name}` -> {', '.join(f'`{f}`' for f in d.features)}"
                    + (f" ({unparsed[d.name]} cells not read as dates, now missing)" if d.name in unparsed else "")
                    for d in report.expanded
                )
            )
    if profile.dropped:
        lines.append("- dropped columns: " + "; ".join(f"`{c}` ({why})" for c, why in profile.dropped.items()))
    if profile.leaks:
        lines.append("- flagged as possible target leaks (kept): " + "; ".join(f"`{c}`" for c in profile.leaks))
    return lines or ["- nothing: every column was used as it was read"]


def _num(value: float) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


def _required(criterion: str, threshold: float, metric: str) -> str:
    return {
        "min_score": f"{metric} at least as good as {threshold:g}",
        "min_margin_over_baseline": f"beats the baseline by more than {threshold:g}",
        "max_latency_ms_per_row": f"at most {threshold:g} ms per row",
        "max_model_mb": f"at most {threshold:g} MB",
    }.get(criterion, f"{threshold:g}")
