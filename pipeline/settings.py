"""The configuration's tree of frozen dataclasses: one section per phase, and every default.

A config file (`pipeline.config` reads and validates it) sets any subset of these fields,
one table per section (`[data]`, `[business]`, ...); each phase is handed its own section.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.metrics import DEFAULT_RELATIVE_TOLERANCE, DEFAULT_TOLERANCE
from stages.model_registry import MODELS
from stages.selection import SIMPLEST_EQUIVALENT

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / "data" / "penguins.csv"
DEFAULT_TARGET = "species"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from.

    Attributes:
        path: A CSV or Parquet file. Relative paths are relative to the working directory.
        categorical: Columns to use as categories whatever their values: codes that look
            like numbers (zip codes), or columns that mix numbers and text on purpose.
    """

    path: Path = DEFAULT_DATA
    categorical: tuple[str, ...] = ()


@dataclass(frozen=True)
class BusinessConfig:
    """The business goal, written down before any training (CRISP-DM phase 1).

    The criteria are the go/no-go gate applied after the holdout evaluation: a model that
    fails any of them is logged but neither registered as `champion` nor exported.

    Attributes:
        target: The column to predict.
        task: `auto` (detect from the target), `regression`, `binary` or `multiclass`.
        metric: The primary metric that ranks candidates; empty means the task's default.
        objective: What the model is for, in the user's words (the model card's intended use).
        min_score: The worst acceptable holdout score of the primary metric; None (key
            absent) sets no minimum. For a metric where lower is better (rmse, mae,
            log_loss) it is the highest acceptable value.
        min_margin_over_baseline: The chosen model's holdout score must beat the
            `baseline` (dummy) model's by more than this, in the metric's units.
        max_latency_ms_per_row: The most milliseconds per row the final model may take to
            predict the holdout in one batch; None sets no limit.
        max_model_mb: The largest the serialised final model may be, in MB (10^6 bytes);
            None sets no limit.
    """

    target: str = DEFAULT_TARGET
    task: str = "auto"
    metric: str = ""
    objective: str = ""
    min_score: float | None = None
    min_margin_over_baseline: float = 0.0
    max_latency_ms_per_row: float | None = None
    max_model_mb: float | None = None


@dataclass(frozen=True)
class PreparationConfig:
    """Holdout split and preprocessing.

    Attributes:
        holdout: Share of labelled rows kept aside for the final evaluation.
        rare_category_share: Categories rarer than this share of rows are grouped together.
        max_categories: At most this many one-hot columns per categorical column.
    """

    holdout: float = 0.2
    rare_category_share: float = 0.01
    max_categories: int = 20


@dataclass(frozen=True)
class ModelingConfig:
    """The candidates and how they are compared.

    Attributes:
        models: Short names of the candidates (see `stages.model_registry.MODELS`).
        folds: Number of cross-validation folds (stratified for classification).
        n_jobs: Parallel fits; -1 uses every core.
        mlp_hidden_layers: Units per hidden layer of the MLP.
        candidate_timeout: Seconds one candidate's cross-validation fits may take in total
            (all folds, wall clock); past it the candidate is stopped and marked failed.
            0 sets no limit.
        candidate_memory_mb: Memory (address space, MiB) each parallel fit's worker process
            may use; a candidate that needs more is marked failed. 0 is automatic: three
            quarters of the machine's memory shared among the parallel fits, at least 2 GiB.
            With `n_jobs = 1`, `candidate_timeout = 0` and this 0, the fits run inside the
            crispml process, with no limit and no isolation (for debugging).
        time_budget: Seconds the whole run may take, from start to export; candidates whose
            cross-validation is not finished in time are reported as such and the run goes on
            with the ones that finished. 0 sets no budget.
        tune: Also cross-validate a tuned variant of every candidate (`<name>:tuned`): a
            successive-halving random search over a small documented space, nested inside
            each outer training fold (see `stages.tuning`).
        race: Stop a candidate's cross-validation early once its folds so far show it cannot be
            chosen (`stages.racing`): it is then a `raced_out` row of the leaderboard with the
            folds it finished. False cross-validates every candidate on every fold.
        backend: Where the fits run: `local` (worker processes on this machine) or `dask`
            (the workers of a Dask distributed cluster, one future per fit; see `pipeline.backends.dask_cluster`).
        scheduler: The Dask scheduler's address (`tcp://host:8786`) for `backend = "dask"`;
            empty starts a local cluster.
    """

    models: tuple[str, ...] = tuple(MODELS)
    folds: int = 5
    n_jobs: int = -1
    mlp_hidden_layers: tuple[int, ...] = (64, 32)
    candidate_timeout: float = 600.0
    candidate_memory_mb: int = 0
    time_budget: float = 0.0
    tune: bool = False
    race: bool = True
    backend: str = "local"
    scheduler: str = ""


@dataclass(frozen=True)
class EvaluationConfig:
    """How the model is chosen from the leaderboard and checked on the holdout.

    Attributes:
        selection: `simplest_equivalent` (among the candidates practically as good as the
            top one, the simplest) or `best_mean` (the top one by mean score).
            `simplest_within_noise` is a deprecated name for `simplest_equivalent`.
        alpha: The largest accepted chance that a simpler candidate loses more than the
            tolerance against the top one (Bayesian correlated t-test); also the significance
            level of the corrected resampled t-test the leaderboard shows.
        tolerance: The largest loss against the top one, in the metric's units, that a
            simpler model may cost, for metrics with a fixed scale (r2, accuracy,
            balanced_accuracy, f1_macro, roc_auc). 0 accepts only a candidate known not to lose.
        relative_tolerance: The same as a share of the top one's mean score, for metrics
            whose scale is the data's (rmse, mae, log_loss): 0.01 is 1%.
        holdout_tolerance_sd: The holdout score is flagged when it is further than this
            many expected standard deviations from the cross-validated mean.
    """

    selection: str = SIMPLEST_EQUIVALENT
    alpha: float = 0.05
    tolerance: float = DEFAULT_TOLERANCE
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE
    holdout_tolerance_sd: float = 3.0


@dataclass(frozen=True)
class DeploymentConfig:
    """Where the chosen model goes.

    Attributes:
        out: The export directory; the model is written to `<out>/<experiment>/model/`.
        register: Register the model in the MLflow registry with the alias `champion`.
        challenge: Before a new model takes `champion`, compare it with the current one on
            the new holdout's rows neither learnt from (`stages.challenge`); a model that may
            be worse by more than the selection tolerance is registered as `challenger` and
            not exported. False: every model that passes its gate takes `champion`.
    """

    out: Path = Path("models")
    register: bool = True
    challenge: bool = True


@dataclass(frozen=True)
class TrackingConfig:
    """The MLflow store.

    Attributes:
        uri: Tracking URI. Empty means `MLFLOW_TRACKING_URI`, else `sqlite:///mlruns/mlflow.db`.
        experiment: Experiment name, also the registered model's name and a folder under
            `deployment.out`, so it must follow MLflow's rules and the file system's (see
            `experiment_name_problem`). Empty means the data file's stem (`penguins` for
            `data/penguins.csv`).
    """

    uri: str = ""
    experiment: str = ""


@dataclass(frozen=True)
class Config:
    """The whole configuration: one section per stage, plus the seed."""

    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    business: BusinessConfig = field(default_factory=BusinessConfig)
    preparation: PreparationConfig = field(default_factory=PreparationConfig)
    modeling: ModelingConfig = field(default_factory=ModelingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def experiment(self) -> str:
        """The experiment name: the configured one, else the data file's stem."""
        return self.tracking.experiment or Path(self.data.path).stem

    @property
    def tracking_uri(self) -> str:
        """The tracking URI: configured, else `MLFLOW_TRACKING_URI`, else the local store."""
        return self.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON/TOML-friendly values."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
