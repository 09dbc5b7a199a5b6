"""crispml's Python API: the whole pipeline on a DataFrame or a file, from a notebook or a script.

    import crispml

    result = crispml.run(frame, target="species", models=["baseline", "linear", "random_forest"])
    result.leaderboard              # one row per candidate, as leaderboard.csv
    result.model.predict(new_rows)  # the chosen scikit-learn pipeline, refitted on every labelled row
    crispml.predict(result, new_rows)

`run` does what `crispml run` does (the same checks, MLflow run, registry and export) and
returns a `Result`; `predict` does what `crispml predict` does, and returns the scored
rows. Errors are the command line's, raised: a `crispml.CrispmlError` whose message is one
line saying what is wrong and how to fix it. Ctrl-C (or interrupting a notebook's kernel)
stops a run as it stops the command: its MLflow run ends KILLED, and the registry and the
export stay as they were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import interrupts, phases, runner
from pipeline.config import apply_overrides, load_config
from pipeline.errors import DataError, UsageError, did_you_mean
from pipeline.exports import verify_export
from pipeline.files import bytes_as_text, read_table
from pipeline.settings import Config
from pipeline.tracking import loading
from stages import contract
from stages.challenge import Challenge
from stages.evaluation import Evaluation
from stages.gate import Decision
from stages.selection import Selection

DATAFRAME_SOURCE = "a pandas DataFrame"
"""The data's source in messages and the model card, for a run on a DataFrame."""


def _keywords() -> dict[str, str]:
    """Each keyword `run` takes, to the config field it sets: a section's field by its own name."""
    fields = {"seed": "seed", "tracking_uri": "tracking.uri"}
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                fields.setdefault(f.name, f"{section.name}.{f.name}")
    del fields["uri"], fields["path"]  # `tracking_uri`, and the data is `run`'s first argument
    return fields


KEYWORDS = _keywords()
"""The options `run` takes: every field of the config file, by its own name (`folds`, `models`,
`experiment`, `out`...), and `tracking_uri` for `[tracking] uri`."""


@dataclass(frozen=True)
class Result:
    """What `crispml.run` produced.

    Attributes:
        leaderboard: One row per candidate, best first, as `leaderboard.csv`: rank, status,
            each metric's mean and spread over the folds, the selection's verdict.
        model: The chosen scikit-learn pipeline, refitted on every labelled row: what was
            logged, registered and exported. It takes the raw feature columns.
        chosen: The chosen candidate's name.
        selection: How it was chosen from the leaderboard, and why (`selection.reason`).
        evaluation: Its scores on the untouched holdout, beside the baseline's.
        decision: The go/no-go gate (`decision.go`, and `decision.reasons` on no-go).
        run_id: The MLflow parent run.
        model_uri: The logged model (`models:/m-...`).
        registered: `models:/<experiment>@champion` (`@challenger` for a challenger), or ""
            when not registered (always on no-go).
        export_dir: The exported model folder, or None on no-go and for a challenger.
        experiment: The MLflow experiment, also the registered model's name.
        tracking_uri: The MLflow store.
        challenge: The comparison with the registry's `champion` (`challenge.outcome`,
            `.reason`, `.champion_score`, `.new_score`, `.p_worse`), or None when nothing was registered.
    """

    leaderboard: pd.DataFrame
    model: Any
    chosen: str
    selection: Selection
    evaluation: Evaluation
    decision: Decision
    run_id: str
    model_uri: str
    registered: str
    export_dir: Path | None
    experiment: str
    tracking_uri: str
    challenge: Challenge | None = None

    @property
    def go(self) -> bool:
        """True when the model passed the business criteria (it was exported and, if asked, registered)."""
        return self.decision.go

    @property
    def challenger(self) -> bool:
        """True when the model passed its gate but may be worse than the champion: registered as `challenger`, not exported."""
        return self.challenge is not None and not self.challenge.promoted

    def __repr__(self) -> str:
        where = self.registered or (str(self.export_dir) if self.export_dir else self.model_uri)
        return (
            f"<crispml.Result {self.chosen!r} chosen, holdout {self.evaluation.metric} "
            f"{self.evaluation.holdout.get(self.evaluation.metric, math.nan):.4f}, "
            f"{'challenger' if self.challenger else self.decision.label}; "
            f"run {self.run_id} in {self.experiment!r}; model {where}>"
        )


def run(
    data: str | os.PathLike[str] | pd.DataFrame,
    target: str | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    verbose: bool = True,
    **options: Any,
) -> Result:
    """Run the CRISP-DM pipeline on a data set, as `crispml run` does, and return what it found.

    Args:
        data: A CSV or Parquet file, or a DataFrame (never changed; the run works on a copy).
        target: The column to predict; needed unless `config` sets it.
        config: A TOML config file, read first; `options` override it.
        verbose: Print each phase's progress to stderr, as the command line does.
        **options: Any config field by its own name (see `KEYWORDS`): `models=["linear",
            "random_forest"]`, `folds=3`, `experiment="churn"`, `out="models"`,
            `register=False`, `tracking_uri="sqlite:///mlruns/mlflow.db"`, `seed=7`...
            On a DataFrame, `experiment` defaults to the target's name (on a file, to its stem).

    Returns:
        The leaderboard, the chosen and fitted model, the selection, the holdout
        evaluation, the gate's decision, and where it was all logged.

    Raises:
        CrispmlError: Bad data, options or store, each with a one-line message (the
            command line's exit code 2); nothing is trained or written first.
        KeyboardInterrupt: The run was interrupted; its MLflow run ends KILLED.
    """
    started = time.monotonic()
    overrides = _overrides(options)
    loaded = load_config(Path(config) if config is not None else None)
    table = None
    if isinstance(data, pd.DataFrame):
        frame = checked_frame(data)
        overrides["data.path"] = "<DataFrame>"
        chosen_target = target if target is not None else loaded.business.target
        if "tracking.experiment" not in overrides and not loaded.tracking.experiment:
            overrides["tracking.experiment"] = str(chosen_target)
        table = phases.Table(frame, DATAFRAME_SOURCE, frame_sha256(frame))
    elif isinstance(data, (str, os.PathLike)):
        overrides["data.path"] = os.fspath(data)
    else:
        raise UsageError(f"data must be a file path or a pandas DataFrame, not {type(data).__name__}")
    if target is not None:
        overrides["business.target"] = str(target) if isinstance(data, pd.DataFrame) else target  # its names became text
    settings = apply_overrides(loaded, overrides)
    progress: phases.Progress = _printer(started) if verbose else (lambda stage, message, done=None: None)
    with interrupts.on_signals():
        result = runner.run(settings, progress, started=started, table=table)
    return Result(
        leaderboard=result.table,
        model=result.model,
        chosen=result.selection.chosen,
        selection=result.selection,
        evaluation=result.evaluation,
        decision=result.decision,
        run_id=result.run_id,
        model_uri=result.model_uri,
        registered=result.registered,
        export_dir=result.export_dir,
        experiment=result.experiment,
        tracking_uri=result.tracking_uri,
        challenge=result.challenge,
    )


def predict(
    model: Result | str | os.PathLike[str],
    data: str | os.PathLike[str] | pd.DataFrame,
    *,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """Score rows with a saved model, as `crispml predict` does: its data contract checked first.

    Args:
        model: A `Result`, an exported model folder, or a model URI (`models:/churn@champion`).
        data: The rows: a DataFrame or a CSV or Parquet file. Columns the model does not
            use are carried through.
        tracking_uri: The store for `models:/` and `runs:/` URIs (default: the result's, else
            `MLFLOW_TRACKING_URI`, else `sqlite:///mlruns/mlflow.db`).

    Returns:
        The rows, in order, with `prediction` and, for a classifier, `proba_<class>` columns.

    Raises:
        CrispmlError: No model there, a model folder changed since export, or rows that
            break the model's data contract (a missing column, a wrong type).
    """
    if isinstance(model, Result):
        tracking_uri = tracking_uri or model.tracking_uri
        model = str(model.export_dir) if model.export_dir is not None else model.model_uri
    source = os.fspath(model)
    uri = tracking_uri or Config().tracking_uri
    if not loading.is_model_uri(source) and Path(source).is_dir():
        verify_export(Path(source))
    loaded = loading.load_model(source, uri)
    if isinstance(data, pd.DataFrame):
        rows = checked_frame(data)
    elif isinstance(data, (str, os.PathLike)):
        rows = read_table(Path(data))
    else:
        raise UsageError(f"data must be a file path or a pandas DataFrame, not {type(data).__name__}")
    scored = contract.score(loaded.model, rows, loaded.contract)
    for warning in (*loaded.warnings, *scored.warnings):
        print(f"crispml: warning: {warning}", file=sys.stderr)
    frame = scored.frame
    if isinstance(data, pd.DataFrame):  # the caller's rows and labels: `sub["p"] = predict(r, sub)["prediction"]` aligns
        frame.index = data.index
        frame.columns = [*data.columns, *frame.columns[data.shape[1]:]]
    return frame


def checked_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of a user's DataFrame in the form a data file is read into.

    Column names become strings (`0` is `"0"`), the index is dropped (rows are counted
    from 0, as in a file), and columns of UTF-8 bytes become text.

    Raises:
        DataError: It has no rows or no columns, nested column names, or two columns whose
            names are the same as text.
    """
    if isinstance(frame.columns, pd.MultiIndex):
        raise DataError(
            "the DataFrame has nested (MultiIndex) column names; flatten them first, "
            "e.g. frame.columns = ['_'.join(map(str, c)) for c in frame.columns]"
        )
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(f"the DataFrame has {frame.shape[0]} rows and {frame.shape[1]} columns; pass one with data rows")
    names = [str(c) for c in frame.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"the DataFrame has duplicate column names: {', '.join(dupes)}; rename them")
    copy = frame.copy()
    copy.columns = pd.Index(names, dtype=object)
    return bytes_as_text(copy.reset_index(drop=True))


def frame_sha256(frame: pd.DataFrame) -> str:
    """A SHA-256 of a DataFrame's column names, types and values, in order (the manifest's data hash)."""
    digest = hashlib.sha256()
    for name in frame.columns:
        column = frame[name]
        digest.update(f"{name}\0{column.dtype}\0".encode())
        try:
            values = pd.util.hash_pandas_object(column, index=False)
        except TypeError:  # unhashable values (lists, dicts): by their text
            values = pd.util.hash_pandas_object(column.map(repr), index=False)
        digest.update(values.to_numpy().tobytes())
    return digest.hexdigest()


def _overrides(options: dict[str, Any]) -> dict[str, Any]:
    unknown = [k for k in options if k not in KEYWORDS]
    if unknown:
        first = unknown[0]
        raise UsageError(
            f"crispml.run() got an unknown option {first!r}{did_you_mean(first, KEYWORDS)}; "
            f"it takes {', '.join(sorted(KEYWORDS))}"
        )
    return {KEYWORDS[k]: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}


def _printer(started: float) -> Callable[..., None]:
    from pipeline.cli import ProgressPrinter

    return ProgressPrinter(started)
