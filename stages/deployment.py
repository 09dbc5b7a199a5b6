"""CRISP-DM phase 6, deployment: the final model, its manifest, and batch scoring.

The chosen pipeline is refitted on every labelled row. Saving it (MLflow model format,
registry) is the runner's job through `pipeline.tracking`; this module stays pure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from stages.errors import DataError
from stages import subsample
from stages.cleaning import CleaningPlan, CleaningReport, apply_cleaning
from stages.evaluation import Decision, Evaluation, Footprint, Importance, Selection
from stages.modeling import RACED_OUT, Leaderboard, hyperparameters, predict_with_proba
from stages.preparation import conform_features
from stages.tuning import is_tuned, unwrap_search
from stages.understanding import CATEGORICAL, CLASSIFICATION, NUMERIC, DataProfile

PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "joblib", "mlflow", "skops")
"""The packages a saved model depends on, pinned in its requirements and manifest."""
INPUT_EXAMPLE_ROWS = 5
PREDICTION = "prediction"
PROBA_PREFIX = "proba_"


@dataclass(frozen=True)
class Deployment:
    """The model to ship.

    Attributes:
        name: The chosen candidate's short name.
        model: Its pipeline, fitted on every labelled row; for a tuned candidate, with the
            search replaced by the estimator it chose (plain estimators only).
        features: Feature columns in training order.
        numeric: The numeric ones among them.
        input_example: A few training rows, as the model expects them.
        manifest: Provenance: data hash, seed, versions, scores, leaderboard, data contract.
        contract: What the model expects as input (saved with it, checked by every scorer).
    """

    name: str
    model: Pipeline
    features: tuple[str, ...]
    numeric: tuple[str, ...]
    input_example: pd.DataFrame
    manifest: dict[str, Any]
    contract: DataContract


def refit_for_deployment(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    profile: DataProfile,
    leaderboard: Leaderboard,
    evaluation: Evaluation,
    data_sha256: str,
    seed: int,
    fitted: Pipeline | None = None,
) -> Deployment:
    """Fit the chosen pipeline on every labelled row and describe it.

    Args:
        pipeline: The chosen candidate's unfitted pipeline.
        X: Features of every labelled row.
        y: Target of every labelled row.
        profile: The data profile.
        leaderboard: The comparison that chose it.
        evaluation: Its holdout evaluation.
        data_sha256: Hash of the data file.
        seed: The run's seed.

    Returns:
        The deployment. For a tuned candidate the search is run once more on every row,
        and the manifest's `tuning` holds the setting it chose (None for other candidates).
    """
    unwrapped = unwrap_search(fitted if fitted is not None else clone(pipeline).fit(X, y))
    model = subsample.unwrap(unwrapped.model)  # plain scikit-learn types only, nothing from crispml
    tuning = (
        {"search": unwrapped.search, "best_params": unwrapped.best_params, "inner_cv_score": unwrapped.inner_score}
        if unwrapped.search
        else None
    )
    manifest = {
        "crispml_version": _version("crispml"),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": evaluation.model,
        "estimator": type(model.steps[-1][1]).__name__,
        "hyperparameters": hyperparameters(model.steps[-1][1]),
        "tuning": tuning,
        "task": profile.task,
        "metric": leaderboard.metric,
        "seed": seed,
        "data": {
            "source": profile.source,
            "sha256": data_sha256,
            "rows": profile.n_rows,
            "labelled_rows": len(y),
            "columns": profile.n_columns,
            "target": profile.target,
        },
        "features": {
            "names": list(profile.features),
            "numeric": list(profile.numeric_features),
            "categorical": list(profile.categorical_features),
            "dropped": profile.dropped,
        },
        "classes": [str(c) for c in model.classes_] if profile.task in CLASSIFICATION else [],
        "cv": {"mean": evaluation.cv_mean, "std": evaluation.cv_std, "folds": leaderboard.n_folds},
        "holdout": evaluation.holdout,
        "leaderboard": _json_records(leaderboard.to_frame()),
        "packages": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
    }
    contract = build_contract(X, profile)
    return Deployment(
        name=evaluation.model,
        model=model,
        features=profile.features,
        numeric=profile.numeric_features,
        input_example=X.head(INPUT_EXAMPLE_ROWS),
        manifest={**manifest, CONTRACT_KEY: contract.to_dict()},
        contract=contract,
    )


MAX_CONTRACT_CATEGORIES = 1000
"""A categorical column with more distinct values than this is not listed in the contract (and not checked for unseen ones)."""
CONTRACT_KEY = "crispml_contract"
"""The key of the data contract in an MLflow model's metadata (the `MLmodel` file) and in `manifest.json`."""
MISSING_DRIFT = 0.1
"""A column whose share of missing values exceeds the training share by more than this is reported..."""
MISSING_DRIFT_MIN_ROWS = 20
"""...in a batch of at least this many rows; in a smaller one, only missing values in a column that had none."""


@dataclass(frozen=True)
class ColumnContract:
    """What the model saw in one feature column during training.

    Attributes:
        name: Column name.
        kind: `numeric` or `categorical`.
        dtype: Its dtype in the training data, as text ("" when unknown).
        missing_share: Share of missing values in the labelled training rows (None when unknown).
        minimum: Smallest value seen (numeric columns; None when unknown).
        maximum: Largest value seen (numeric columns; None when unknown).
        categories: Every value seen (categorical columns), or None when there were more
            than `MAX_CONTRACT_CATEGORIES` or they are unknown.
    """

    name: str
    kind: str
    dtype: str = ""
    missing_share: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataContract:
    """The input a model expects, saved with it so that every scorer applies the same checks.

    Attributes:
        columns: The feature columns, in training order.
        target: The training target's name ("" when unknown).
        cleaning: How training read its raw data (`stages.cleaning`), applied to every batch
            before the checks; None for a model saved without one (rows are checked as given).
    """

    columns: tuple[ColumnContract, ...]
    target: str = ""
    cleaning: CleaningPlan | None = None

    @property
    def features(self) -> tuple[str, ...]:
        """Feature names, in training order."""
        return tuple(c.name for c in self.columns)

    @property
    def numeric(self) -> tuple[str, ...]:
        """The numeric features."""
        return tuple(c.name for c in self.columns if c.kind == NUMERIC)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The columns a raw batch needs: the features, with a date's calendar features given as the date column."""
        plan = self.cleaning
        return tuple(dict.fromkeys(plan.source_of(f) if plan else f for f in self.features))

    def to_dict(self) -> dict[str, Any]:
        """The contract as JSON- and YAML-friendly values."""
        columns = []
        for c in self.columns:
            entry = dataclasses.asdict(c)
            entry["categories"] = list(c.categories) if c.categories is not None else None
            columns.append(entry)
        out: dict[str, Any] = {"target": self.target, "columns": columns}
        if self.cleaning is not None:
            out["cleaning"] = self.cleaning.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> DataContract:
        """Read a contract written by `to_dict`.

        Args:
            raw: The plain values.

        Returns:
            The contract.

        Raises:
            ValueError: They do not describe a contract.
        """
        if not isinstance(raw, dict) or not isinstance(raw.get("columns"), list):
            raise ValueError("a data contract needs a 'columns' list")
        cleaning = CleaningPlan.from_dict(raw["cleaning"]) if raw.get("cleaning") is not None else None
        known = {f.name for f in dataclasses.fields(ColumnContract)}
        columns = []
        for entry in raw["columns"]:
            if not isinstance(entry, dict) or not {"name", "kind"} <= set(entry) or not set(entry) <= known:
                raise ValueError(f"malformed data contract column: {entry!r}")
            categories = entry.get("categories")
            columns.append(ColumnContract(**{**entry, "categories": tuple(map(str, categories)) if categories is not None else None}))
        return cls(columns=tuple(columns), target=str(raw.get("target", "")), cleaning=cleaning)


def build_contract(X: pd.DataFrame, profile: DataProfile) -> DataContract:
    """The data contract of a model trained on `X`: columns, dtypes, categories, ranges, missing shares,
    and how the raw data was read (the profile's cleaning plan).

    Args:
        X: The features of every labelled row, as `conform_features` returns them.
        profile: The data profile (training dtypes, and the cleaning report).

    Returns:
        The contract.
    """
    dtypes = {c.name: c.dtype for c in profile.columns}
    numeric = set(profile.numeric_features)
    columns = []
    for name in profile.features:
        values = X[name]
        present = values.dropna()
        missing = float(values.isna().mean()) if len(values) else 0.0
        if name in numeric:
            low, high = (float(present.min()), float(present.max())) if len(present) else (None, None)
            columns.append(ColumnContract(name, NUMERIC, dtypes.get(name, ""), missing, low, high))
        else:
            seen = sorted(map(str, present.unique()))
            listed = tuple(seen) if len(seen) <= MAX_CONTRACT_CATEGORIES else None
            columns.append(ColumnContract(name, CATEGORICAL, dtypes.get(name, ""), missing, categories=listed))
    plan = profile.cleaning.plan if profile.cleaning is not None else None
    return DataContract(columns=tuple(columns), target=profile.target, cleaning=plan)


def contract_from_signature(features: tuple[str, ...], numeric: tuple[str, ...]) -> DataContract:
    """A contract with names and kinds only, for a model saved without one.

    Args:
        features: Input column names.
        numeric: The numeric ones among them.

    Returns:
        A contract that checks columns and types but reports no drift.
    """
    return DataContract(columns=tuple(ColumnContract(f, NUMERIC if f in numeric else CATEGORICAL) for f in features))


@dataclass(frozen=True)
class ContractCheck:
    """Rows checked against a data contract: the model's input, and what was odd about them.

    Attributes:
        features: The feature columns, conformed to the training types, in the input's row order.
        ignored: Input columns the model does not use.
        unseen: `{column: rows}` with a category not seen in training.
        out_of_range: `{column: rows}` with a value outside the training range.
        missing: `{column: missing cells}`, for columns missing much more often than in training.
        warnings: One readable line per finding above, after the cleaning's own (markers, spaces...).
        cleaning: What the contract's cleaning plan did to the rows, or None without a plan.
    """

    features: pd.DataFrame
    ignored: tuple[str, ...] = ()
    unseen: dict[str, int] = field(default_factory=dict)
    out_of_range: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    cleaning: CleaningReport | None = None


def check_rows(data: pd.DataFrame, contract: DataContract, what: str = "the data to score") -> ContractCheck:
    """Check rows against a model's data contract, for batch scoring and for serving alike.

    The rows are first read as training read its raw data, by the contract's cleaning plan
    (missing markers, spaces, numbers with thousands separators, re-typed columns, dates
    expanded), so the raw file a model was trained on scores as it is.
    A missing column, text in a numeric column or an infinite value is an error: the model
    cannot score such a row. Extra columns, unseen categories, values outside the training
    range and unusually many missing values are scored (the preprocessor handles them) and
    reported. No row is dropped.

    Args:
        data: The rows. They are not modified.
        contract: The model's contract.
        what: What the rows are, for messages ("the data to score", "the request").

    Returns:
        The model's input and the findings.

    Raises:
        DataError: A feature column is missing, or a numeric one holds text or an infinite value.
    """
    features = contract.features
    raw_columns = data.columns
    absent = [c for c in contract.inputs if c not in raw_columns]
    if absent:
        raise DataError(
            f"{what} lacks {len(absent)} column(s) the model needs: {', '.join(absent)}; "
            f"add them (the model needs: {', '.join(contract.inputs)})"
        )
    # Only the model's inputs are read by the plan: other columns are carried through as they are, unread.
    cleaned = apply_cleaning(data.loc[:, list(contract.inputs)], contract.cleaning) if contract.cleaning is not None else None
    if cleaned is not None:
        data = cleaned.frame
    for column in contract.columns:
        if column.kind != NUMERIC:
            continue
        raw = data[column.name]
        converted = pd.to_numeric(raw, errors="coerce")
        bad = (converted.isna() & raw.notna()).to_numpy()
        trained_as = f" (it was {column.dtype} in training)" if column.dtype else ""
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"column '{column.name}' must be numeric{trained_as} but {what} holds {_plain(raw.iloc[row])!r} "
                f"(row {row + 1}, {int(bad.sum())} such cells); fix or blank those cells"
            )
        infinite = np.isinf(converted.to_numpy(dtype=float, na_value=np.nan))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise DataError(
                f"column '{column.name}' of {what} holds an infinite value (row {row + 1}, {int(infinite.sum())} such cells); "
                "replace them with numbers or leave the cells empty"
            )
    X = conform_features(data, features, contract.numeric)
    n = len(X)
    warnings: list[str] = list(cleaned.report.warnings) if cleaned is not None else []
    ignored = tuple(str(c) for c in raw_columns if c not in set(contract.inputs))
    if ignored:
        warnings.append(
            f"{len(ignored)} column(s) of {what} are not model inputs and are ignored for scoring: {', '.join(ignored)}"
        )
    unseen: dict[str, int] = {}
    out_of_range: dict[str, int] = {}
    missing: dict[str, int] = {}
    for column in contract.columns:
        values = X[column.name]
        if column.kind == NUMERIC and column.minimum is not None and column.maximum is not None:
            outside = (values < column.minimum) | (values > column.maximum)
            if outside.any():
                out_of_range[column.name] = int(outside.sum())
                warnings.append(
                    f"drift: column '{column.name}' has {int(outside.sum())} of {n} rows outside the training range "
                    f"[{column.minimum:g}, {column.maximum:g}] (e.g. {float(values[outside].iloc[0]):g}); they are scored"
                )
        if column.kind == CATEGORICAL and column.categories is not None:
            new = values.notna() & ~values.isin(column.categories)
            if new.any():
                unseen[column.name] = int(new.sum())
                warnings.append(
                    f"drift: column '{column.name}' has {int(new.sum())} of {n} rows with a category not seen in training "
                    f"(e.g. {values[new].iloc[0]!r}); they are scored as an unknown category"
                )
        n_missing = int(values.isna().sum())
        share = column.missing_share
        enough = n >= MISSING_DRIFT_MIN_ROWS or share == 0.0
        if n_missing and share is not None and enough and n_missing / n > share + MISSING_DRIFT:
            missing[column.name] = n_missing
            warnings.append(
                f"drift: column '{column.name}' is {n_missing / n:.0%} missing ({n_missing} of {n} rows) against "
                f"{column.missing_share:.0%} in training; the missing values are imputed"
            )
    return ContractCheck(X, ignored, unseen, out_of_range, missing, tuple(warnings), cleaned.report if cleaned else None)


@dataclass(frozen=True)
class Scored:
    """Scored rows and what the contract check found.

    Attributes:
        frame: The input's rows, in order, plus `prediction` and `proba_<class>` columns.
        check: The contract check (warnings, drift counts).
    """

    frame: pd.DataFrame
    check: ContractCheck

    @property
    def warnings(self) -> tuple[str, ...]:
        """The contract check's warnings."""
        return self.check.warnings


def score(model: Any, data: pd.DataFrame, contract: DataContract) -> Scored:
    """Score rows: the input's columns plus `prediction` and, for a classifier, `proba_<class>`.

    Args:
        model: A fitted pipeline.
        data: Rows to score; extra columns are carried through, not used.
        contract: The model's data contract (`build_contract`), checked first.

    Returns:
        A new frame with exactly the input's rows, in order, and the check's findings.

    Raises:
        DataError: The rows already have a column named like an output column, so the
            output would lose it; or they break the contract (see `check_rows`).
    """
    classes = getattr(model, "classes_", None)
    probabilities = classes is not None and hasattr(model, "predict_proba")  # as `predict_with_proba` decides
    outputs = [PREDICTION, *(f"{PROBA_PREFIX}{c}" for c in (classes if probabilities else ()))]
    taken = [name for name in outputs if name in data.columns]
    if taken:
        raise DataError(
            f"the data to score already has {len(taken)} column(s) named like the columns scoring adds: "
            f"{', '.join(taken)}; rename or drop them, so the output keeps every input column as it is "
            f"and adds {', '.join(outputs)}"
        )
    check = check_rows(data, contract)
    pred, proba = predict_with_proba(model, check.features, classes)
    out = data.copy()
    out[PREDICTION] = pred
    if proba is not None and classes is not None:
        for i, c in enumerate(classes):
            out[f"{PROBA_PREFIX}{c}"] = proba[:, i]
    return Scored(frame=out, check=check)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in chunks.

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


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
    verdict = "GO" if decision.go else "NO-GO"
    lines = [
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
    lines += [
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
    lines += [
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
    lines += [
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
    lines += ["", "## Limitations", "", *(f"- {w}" for w in limitations)]
    source = registered or export_dir or model_uri  # the registry's name works on any machine
    columns = ", ".join(f"`{f}`" for f in profile.features)
    plan = profile.cleaning.plan if profile.cleaning is not None else None
    raw = ", ".join(f"`{f}`" for f in dict.fromkeys(plan.source_of(f) if plan else f for f in profile.features))
    lines += [
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
    return "\n".join(lines) + "\n"


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
