"""What each phase of a run hands the next: the table as read, the prepared data and candidates, the assessed model.

The runner (`pipeline.runner`) wires the phases; these are the values it passes between
them, so that the comparison with the champion (`pipeline.retraining`) can take them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.backends.local_pool import Started
from stages import deployment, evaluation, gate, model_registry, modeling, preparation, understanding


class Progress(Protocol):
    """Where the runner reports progress: a stage, a message, and for long steps the share done."""

    def __call__(self, stage: str, message: str, done: float | None = None) -> None: ...


WARNING = "warning"
"""The progress stage of warnings: `progress(WARNING, message)` (the command line prints them on stderr)."""
FIT = "fit"
"""The progress stage of each finished (candidate, fold) fit: `progress(FIT, "12/30 fits", 0.4)`."""


@dataclass(frozen=True)
class Drawing:
    """Plots being drawn in a worker process while the run goes on (`local_pool.start_calls`).

    Attributes:
        started: The call under way, named `plots`.
        what: What the plots are, for the message if drawing fails.
    """

    started: Started
    what: str

    def done(self) -> dict[str, bytes]:
        """Wait for the plots: `{file name: PNG bytes}`.

        Raises:
            RuntimeError: Drawing failed; it takes only results crispml made, so that is a bug in crispml.
        """
        outcome = self.started.outcomes()["plots"]
        if outcome.error:
            raise RuntimeError(f"{self.what} could not be drawn: {outcome.error}")
        return outcome.value


@dataclass(frozen=True)
class Table:
    """The data a run learns from, read once: its rows, where they came from, and their hash.

    Attributes:
        frame: The rows (the run's own copy).
        source: Where they came from, for messages and the model card (a file's path).
        sha256: A file's SHA-256, or for a DataFrame a hash of its columns, types and values.
    """

    frame: pd.DataFrame
    source: str
    sha256: str


@dataclass(frozen=True)
class Prepared:
    """Understanding and preparation: what the data is, and what will be trained on it."""

    profile: understanding.DataProfile
    metric: str
    X: pd.DataFrame
    y: pd.Series
    split: preparation.Split
    folds: modeling.Folds
    preprocessor: Any
    settings: model_registry.ModelSettings
    candidates: dict[str, Any]
    labelled: np.ndarray  # positions, in the data as read, of the rows with a target (X's and y's rows)


@dataclass(frozen=True)
class Assessed:
    """Evaluation: the chosen model on the holdout, the final refit, and the gate's decision."""

    chosen: modeling.CandidateResult
    result: evaluation.Evaluation
    importance: Any
    final: deployment.Deployment
    footprint: evaluation.Footprint
    decision: gate.Decision
    plots: Drawing
