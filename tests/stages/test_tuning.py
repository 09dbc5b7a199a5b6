"""Tuning: search spaces that map onto every registry estimator, nested search, selection, export."""

import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (before importing the search)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import HalvingRandomSearchCV, ParameterSampler, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from pipeline import cli
from pipeline.exports import MANIFEST
from pipeline.files import sha256_of
from pipeline.runner import run
from pipeline.settings import EvaluationConfig, PreparationConfig
from pipeline.tracking import loading, store
from pipeline.tracking import runs as tracking
from stages.deployment import refit_for_deployment
from stages.evaluation import evaluate_holdout
from stages.fold_fits import predict_with_proba
from stages.metrics import DEFAULT_METRIC, METRICS
from stages.model_registry import MODELS, ModelSettings, build_candidates, complexity, search_spaces, trusted_types
from stages.modeling import OK, CandidateResult, Leaderboard, compare_models, make_folds, rank
from stages.preparation import build_preprocessor, features_and_target, split_holdout
from stages.selection import BEST_MEAN, SIMPLEST_EQUIVALENT, annotated_leaderboard, select_model
from stages.tuning import (
    FACTOR,
    INNER_FOLDS,
    N_CANDIDATES,
    default_name,
    scorer,
    search_space,
    tuned_candidates,
    tuned_name,
    unwrap_search,
)
from stages.understanding import profile_data

from conftest import config_for, sqlite_uri

TASKS = ("regression", "binary", "multiclass")
SIZES = (300, 30_000, 1_000_000)  # below, between and above the row thresholds of the size-dependent variants
UNTUNED = {("baseline", task) for task in TASKS} | {("linear", "regression")}
"""Families with no tuned variant: the floor, and LinearRegression (nothing worth searching)."""


@pytest.fixture
def frame():
    """200 rows, a binary label that depends on two numeric columns and a category, with noise."""
    rng = np.random.default_rng(1)
    n = 200
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "blue", "green"], size=n)
    signal = x1 - 0.5 * x2 + (colour == "red") + rng.normal(scale=0.8, size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "label": np.where(signal > 0.3, "yes", "no")})


SPACES = search_spaces()


def test_every_family_declares_a_space():
    assert set(SPACES) == set(MODELS)
    assert SPACES["baseline"] == {}


@pytest.mark.parametrize("n_rows", SIZES)
@pytest.mark.parametrize("task", TASKS)
def test_the_spaces_map_onto_every_registry_estimator(task, n_rows):
    settings = ModelSettings(task=task, seed=0, n_rows=n_rows)
    candidates = build_candidates(list(MODELS), StandardScaler(), settings)
    tuned = tuned_candidates(candidates, task, DEFAULT_METRIC[task], seed=0, spaces=SPACES)
    assert set(tuned) == {tuned_name(n) for n in MODELS if (n, task) not in UNTUNED}
    rng = np.random.RandomState(0)
    for name, pipeline in tuned.items():
        search = pipeline.steps[-1][1]
        assert isinstance(search, HalvingRandomSearchCV) and search.n_candidates == N_CANDIDATES
        assert [n for n, _ in pipeline.steps] == [n for n, _ in candidates[default_name(name)].steps]
        # Every mapped name is a real parameter of the estimator in use: a drawn setting is accepted.
        setting = next(iter(ParameterSampler(search.param_distributions, n_iter=1, random_state=rng)))
        clone(search.estimator).set_params(**setting)


def test_every_base_name_maps_onto_some_variant():
    """A base name that no variant has is a typo, not a parameter left out of one variant."""
    used = {family: set() for family in SPACES}
    for task in TASKS:
        for n_rows in SIZES:
            for family in MODELS:
                model = MODELS[family].build(ModelSettings(task=task, seed=0, n_rows=n_rows))
                space = search_space(family, model, SPACES[family])
                used[family] |= {base for base in SPACES[family] if any(p.split("__")[-1] == base for p in space)}
    assert used == {family: set(space) for family, space in SPACES.items()}


@pytest.mark.parametrize(
    "family, task, n_rows, names",
    [
        ("mlp", "regression", 300, {"regressor__alpha", "regressor__learning_rate_init"}),  # on the standardised target
        ("mlp", "regression", 1_000_000, {"estimator__regressor__alpha", "estimator__regressor__learning_rate_init"}),
        ("mlp", "binary", 300, {"alpha", "learning_rate_init"}),
        ("mlp", "binary", 5000, {"estimator__alpha", "estimator__learning_rate_init"}),  # inside the early stopping
        ("gradient_boosting", "multiclass", 300, {"learning_rate", "max_leaf_nodes", "min_samples_leaf", "l2_regularization"}),
        ("gradient_boosting", "regression", 1_000_000, {"estimator__learning_rate", "estimator__max_leaf_nodes", "estimator__min_samples_leaf", "estimator__l2_regularization"}),
    ],
)
def test_space_names_follow_the_wrappers_of_each_size(family, task, n_rows, names):
    model = MODELS[family].build(ModelSettings(task=task, seed=0, n_rows=n_rows))
    space = search_space(family, model, SPACES[family])
    assert set(space) == names
    model.set_params(**{name: np.asarray(values).flat[0] if isinstance(values, list) else values.rvs(random_state=0) for name, values in space.items()})


def test_a_base_name_matching_two_parameters_is_an_error():
    both = Pipeline([("logistic", LogisticRegression()), ("svc", SVC())])
    with pytest.raises(ValueError, match=r"space of 'two' names 'C', which matches 2 parameters of Pipeline \(logistic__C, svc__C\)"):
        search_space("two", both, {"C": [1.0, 10.0]})


@pytest.mark.parametrize("task", TASKS)
def test_each_scorer_scores_like_the_crispml_metric(task, frame):
    X = frame[["x1", "x2"]]
    if task == "regression":
        y, model, classes = frame["x1"] * 2 + frame["x2"], LinearRegression(), None
    else:
        y = frame["label"] if task == "binary" else pd.Series(np.where(frame["x1"] > 0.5, "a", np.where(frame["x2"] > 0, "b", "c")))
        model, classes = LogisticRegression(), np.unique(y)
    model.fit(X.iloc[:150], y.iloc[:150])
    test_X, test_y = X.iloc[150:], y.iloc[150:]
    pred, proba = predict_with_proba(model, test_X, classes)
    for metric in (m for m in METRICS.values() if task in m.tasks):
        expected = metric.score(test_y.to_numpy(), pred, proba, classes)
        sign = 1 if metric.greater_is_better else -1
        assert scorer(metric.name, task)(model, test_X, test_y) == pytest.approx(sign * expected), metric.name


def test_a_metric_that_does_not_fit_the_task_has_no_scorer():
    with pytest.raises(ValueError, match="metric 'r2' does not apply to a binary task"):
        scorer("r2", "binary")


def test_a_tuned_candidate_searches_several_settings_and_unwraps_to_plain_estimators(frame):
    profile = profile_data(frame, "label")
    X, y = features_and_target(frame, profile)
    candidates = build_candidates(["random_forest"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0, n_rows=len(y)))
    tuned = tuned_candidates(candidates, "binary", "roc_auc", seed=0, spaces=SPACES)["random_forest:tuned"]
    fitted = clone(tuned).fit(X, y)
    search = fitted.steps[-1][1]
    assert search.n_candidates_[0] == N_CANDIDATES and len(search.n_candidates_) >= 2  # several rounds of halving
    assert len({str(p) for p in search.cv_results_["params"]}) > 1  # distinct settings were tried
    assert search.n_resources_[-1] > search.n_resources_[0]
    assert search.n_resources_[-1] * FACTOR > search.max_resources_  # "exhaust": the last round uses (nearly) every row
    assert repr(search.scoring) == repr(scorer("roc_auc", "binary"))  # ranked by the run's metric
    assert isinstance(search.cv, StratifiedKFold) and search.cv.shuffle and search.cv.n_splits == INNER_FOLDS
    unwrapped = unwrap_search(fitted)
    forest = unwrapped.model.steps[-1][1]
    assert type(forest).__name__ == "RandomForestClassifier" and unwrapped.search == "HalvingRandomSearchCV"
    assert set(unwrapped.best_params) <= {"max_depth", "min_samples_leaf", "max_features"} and unwrapped.best_params
    assert all(getattr(forest, k) == v for k, v in unwrapped.best_params.items())
    assert (unwrapped.model.predict(X) == fitted.predict(X)).all()
    assert unwrap_search(candidates["random_forest"].fit(X, y)).best_params == {}


def _row(name, scores):
    return CandidateResult(
        name=name, estimator="X", params={}, status=OK, fold_scores={"accuracy": tuple(scores)}, predict_seconds=0.01
    )


def test_the_default_wins_when_tuning_is_practically_equivalent():
    assert complexity("linear") < complexity("linear:tuned") < complexity("adaboost")
    assert complexity("no_such_model:tuned") == math.inf
    rows = [
        _row("linear", [0.905, 0.927, 0.886, 0.918, 0.896]),
        _row("linear:tuned", [0.906, 0.928, 0.888, 0.919, 0.897]),  # better by 0.0012: well inside the tolerance
        _row("random_forest", [0.907, 0.928, 0.888, 0.920, 0.898]),
    ]
    board = Leaderboard("binary", "accuracy", ("accuracy",), 5, rank(rows, METRICS["accuracy"]))
    chosen = select_model(board, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20)
    assert chosen.top == "random_forest" and chosen.chosen == "linear"
    assert select_model(board, EvaluationConfig(selection=BEST_MEAN), 80, 20).chosen == "random_forest"
    # Without the default, the tuned linear model still ranks below the next family.
    without = Leaderboard("binary", "accuracy", ("accuracy",), 5, rank(rows[1:], METRICS["accuracy"]))
    assert select_model(without, EvaluationConfig(selection=SIMPLEST_EQUIVALENT), 80, 20).chosen == "linear:tuned"
    frame = annotated_leaderboard(board, chosen).set_index("model")
    assert frame.loc["linear:tuned", "tuned_vs_default"] == pytest.approx(0.0012)
    assert frame["tuned_vs_default"].drop("linear:tuned").isna().all()


def test_the_gain_is_positive_when_a_tuned_loss_is_lower():
    rows = [CandidateResult(name=n, estimator="X", params={}, status=OK, fold_scores={"rmse": s}) for n, s in [("svm", (2.0, 2.2)), ("svm:tuned", (1.0, 1.2))]]
    board = Leaderboard("regression", "rmse", ("rmse",), 2, rank(rows, METRICS["rmse"]))
    frame = annotated_leaderboard(board, select_model(board, EvaluationConfig(selection=BEST_MEAN), 80, 20)).set_index("model")
    assert frame.loc["svm:tuned", "tuned_vs_default"] == pytest.approx(1.0)
    untuned = Leaderboard("regression", "rmse", ("rmse",), 2, rows[:1])
    assert "tuned_vs_default" not in annotated_leaderboard(untuned, select_model(untuned, EvaluationConfig(selection=BEST_MEAN), 80, 20))


def test_nested_search_on_the_outer_folds_then_refit_and_save_without_trusting_the_search(frame, tmp_path):
    """The stages in order on a tuned candidate: cross-validation, holdout, final refit, a skops-saved model."""
    profile = profile_data(frame, "label")
    X, y = features_and_target(frame, profile)
    split = split_holdout(X, y, "binary", 0.25, seed=0)
    candidates = build_candidates(["linear"], build_preprocessor(profile, PreparationConfig()), ModelSettings("binary", 0, n_rows=len(split.y_train)))
    candidates |= tuned_candidates(candidates, "binary", "roc_auc", seed=0, spaces=SPACES)
    folds = make_folds(split.y_train, "binary", 3, 0)
    board = compare_models(candidates, split.X_train, split.y_train, folds, "binary", "roc_auc")
    assert {r.name: r.status for r in board.rows} == {"linear": OK, "linear:tuned": OK}
    tuned_row = next(r for r in board.rows if r.name == "linear:tuned")
    assert len(tuned_row.fold_scores["roc_auc"]) == 3 and tuned_row.estimator == "HalvingRandomSearchCV"
    evaluation = evaluate_holdout(tuned_row, candidates["linear:tuned"], split, "binary", "roc_auc")
    final = refit_for_deployment(candidates["linear:tuned"], X, y, profile, board, evaluation, "0" * 64, 0)
    assert [type(s).__name__ for _, s in final.model.steps] == ["ColumnTransformer", "LogisticRegression"]
    assert final.manifest["estimator"] == "LogisticRegression" and final.manifest["model"] == "linear:tuned"
    assert set(final.manifest["tuning"]["best_params"]) == {"C"} and final.manifest["tuning"]["search"] == "HalvingRandomSearchCV"
    assert final.model.steps[-1][1].C == final.manifest["tuning"]["best_params"]["C"]
    # Saved as a run saves it: logged with skops and crispml's trusted types only, then copied out of the store.
    uri = sqlite_uri(tmp_path / "mlruns")
    store.check_store(uri, writable=True)
    with tracking.pipeline_run(uri, "tuned", "save") as tracker:
        logged = tracker.log_model(final.model, final.input_example, [], trusted_types())
    loading.copy_logged_model(logged.uri, tmp_path / "model", uri)
    loaded = loading.load_model(str(tmp_path / "model"), uri)
    assert (loaded.model.predict(X) == final.model.predict(X)).all()


@pytest.mark.slow
def test_a_tuned_penguins_run_shows_tuned_against_default_and_exports_a_plain_model(tmp_path, capsys):
    config = config_for(tmp_path, **{"modeling.models": ["linear", "svm"], "modeling.folds": 3, "modeling.tune": True})
    result = run(config)
    names = {r.name: r.status for r in result.leaderboard.rows}
    assert names == {"linear": OK, "linear:tuned": OK, "svm": OK, "svm:tuned": OK}
    board = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="leaderboard.csv", tracking_uri=config.tracking_uri)
    ).set_index("model")
    for name in ("linear", "svm"):
        gain = board.loc[f"{name}:tuned", "balanced_accuracy_mean"] - board.loc[name, "balanced_accuracy_mean"]
        assert board.loc[f"{name}:tuned", "tuned_vs_default"] == pytest.approx(gain)
        assert math.isnan(board.loc[name, "tuned_vs_default"])
    assert result.export_dir is not None
    manifest = json.loads((result.export_dir / MANIFEST).read_text())
    assert manifest["model"] == result.evaluation.model and "tuned_vs_default" in manifest["leaderboard"][0]
    assert (manifest["tuning"] is not None) == result.evaluation.model.endswith(":tuned")
    assert manifest["data"]["sha256"] == sha256_of(config.data.path)
    rows = pd.read_csv(config.data.path).drop(columns="species")
    loaded = loading.load_model(str(result.export_dir), config.tracking_uri)
    assert "Search" not in type(loaded.model.steps[-1][1]).__name__
    assert set(loaded.model.predict(rows)) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert (mlflow.pyfunc.load_model(str(result.export_dir)).predict(rows)["prediction"] == loaded.model.predict(rows)).all()
    cli._print_summary(result, 1.0)
    printed = capsys.readouterr().out
    assert "vs_default" in printed and "linear:tuned" in printed
