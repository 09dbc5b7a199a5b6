"""The candidate models: one registry entry per family, everything about it in the entry.

`MODELS` maps a short name to a `ModelSpec`: its estimator factories per task (each making its
own size-dependent choices from the training rows), its complexity rank for the selection
rule, its search space for `--tune`, and the types skops must trust to save it. Adding a
model is one entry; `build_candidates` turns names into pipelines with the preprocessor
inside, so cross-validation refits it per fold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import loguniform
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import TransformedTargetRegressor
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR

from stages.early_stopping import EarlyStoppingClassifier
from stages.subsample import RowSubsample
from stages.tuning import default_name, is_tuned
from stages.understanding import REGRESSION


@dataclass(frozen=True)
class ModelSettings:
    """What a model factory may depend on.

    Attributes:
        task: `regression`, `binary` or `multiclass`.
        seed: Random seed for every estimator that has one.
        mlp_hidden_layers: Units per hidden layer of the MLP.
        n_rows: Training rows, for choices that depend on data size.
    """

    task: str
    seed: int
    mlp_hidden_layers: tuple[int, ...] = (64, 32)
    n_rows: int = 0


MLP_EARLY_STOPPING_MIN_ROWS = 1000
"""Below this many training rows a classification MLP trains to convergence instead of stopping early.

Early stopping judges each epoch on 10% of the training rows. On small data that is a
handful of rows whose accuracy saturates at once: on penguins (22 validation rows) it
stopped one fold at 0.77 balanced accuracy, where training to convergence reached 0.98.
From this many rows it stops on the validation log loss instead (`stages.early_stopping`:
validation accuracy also stays flat when one class dominates). Below, stopping on the log
loss scored the same as convergence (breast cancer, penguins) at two to five times the fit time.
"""


MLP_REGRESSION_EARLY_STOPPING_MIN_ROWS = 200
"""From this many training rows (20 validation rows) a regression MLP stops early, on the validation r2.

A network of thousands of weights trained to convergence on a few hundred rows fits their
noise: on scikit-learn's diabetes data (353 rows) it scored r2 0.06 where stopping early
scored 0.43 and linear regression 0.48; on penguins' body mass the two were level (0.85).
"""


MLP_REGRESSION_PATIENCE = 20
"""Epochs without an improvement of the validation r2 before a regression MLP stops (`n_iter_no_change`)."""
GRADIENT_BOOSTING_EARLY_STOPPING_MIN_ROWS = 10_000
"""Above this many training rows gradient boosting stops early on the loss of a 10% validation split.

scikit-learn's own threshold for `early_stopping='auto'`, applied to the run's training rows
rather than to each fit's, so that the cross-validation folds and the deployed refit make the
same choice (and the leaderboard can say which).
"""


# Size-dependent choices (rows: the training part after the holdout). Each one shows on the
# leaderboard as the candidate's `strategy` and in its parameters. Measured on 2 cores with
# 800,000 rows x 57 prepared columns, one fit: AdaBoost's 50 stumps 176 s, 10 MLP epochs 65 s,
# a forest of 100 trees on 20,000 rows each 12 s, Nystroem(300) + calibrated LinearSVC on
# 100,000 rows 37 s, logistic regression 1.5 s. An exact RBF SVM costs O(n^2) memory and more
# than O(n^2) time, so it stops being usable between 20,000 and 50,000 rows.
EXACT_SVM_MAX_ROWS = 20_000
"""Up to this many rows the SVM is an exact RBF kernel machine; above, a kernel approximation."""
NYSTROEM_COMPONENTS = 300
"""Kernel features of the approximate SVM (Nystroem approximation of the RBF kernel)."""
APPROX_SVM_MAX_ROWS = 30_000
"""The approximate SVM learns from at most this many rows."""
FOREST_ROWS_PER_TREE = 20_000
"""Above this many rows each random forest tree is grown on a bootstrap sample of this size (`max_samples`)."""
BOOSTING_MAX_ROWS = 100_000
"""AdaBoost learns from at most this many rows (its stumps are fitted one after another)."""
MLP_MAX_ROWS = 100_000
"""The MLP learns from at most this many rows (with early stopping, so it stops when it stops improving)."""
GRADIENT_BOOSTING_MAX_ROWS = 200_000
"""Gradient boosting learns from at most this many rows (see `_gradient_boosting` for the measurement)."""


def _capped(estimator: BaseEstimator, s: ModelSettings, max_rows: int) -> BaseEstimator:
    """The estimator as is up to `max_rows` rows, else fitted on a sample of that many rows."""
    return estimator if s.n_rows <= max_rows else RowSubsample(estimator, max_rows=max_rows, random_state=s.seed)


def _nystroem(linear_svm: BaseEstimator, s: ModelSettings) -> Pipeline:
    """The RBF kernel approximated by `NYSTROEM_COMPONENTS` Nystroem features, then a linear SVM."""
    return Pipeline([("kernel", Nystroem(n_components=NYSTROEM_COMPONENTS, random_state=s.seed)), ("svm", linear_svm)])


def _svm_regression(s: ModelSettings) -> BaseEstimator:
    # SVR's defaults (C=1, epsilon=0.1) assume a target of unit scale: on body mass in
    # grams it scored r2 0.01; fitted on the standardised target, 0.85.
    if s.n_rows <= EXACT_SVM_MAX_ROWS:
        return TransformedTargetRegressor(SVR(), transformer=StandardScaler())
    approx = _nystroem(LinearSVR(dual="auto", random_state=s.seed, max_iter=5000), s)
    return _capped(TransformedTargetRegressor(approx, transformer=StandardScaler()), s, APPROX_SVM_MAX_ROWS)


def _svm_classification(s: ModelSettings) -> BaseEstimator:
    # Platt-scaled probabilities from internal CV (scikit-learn's replacement for
    # SVC(probability=True)), for ROC AUC, log loss and probability columns.
    if s.n_rows <= EXACT_SVM_MAX_ROWS:
        return CalibratedClassifierCV(SVC(random_state=s.seed), ensemble=False)
    approx = _nystroem(LinearSVC(dual="auto", random_state=s.seed, max_iter=5000), s)
    return _capped(CalibratedClassifierCV(approx, ensemble=False, cv=3), s, APPROX_SVM_MAX_ROWS)


def _forest(s: ModelSettings, cls: type) -> BaseEstimator:
    per_tree = FOREST_ROWS_PER_TREE if s.n_rows > FOREST_ROWS_PER_TREE else None
    return cls(n_estimators=100, max_samples=per_tree, random_state=s.seed, n_jobs=1)


def _gradient_boosting(s: ModelSettings, cls: type) -> BaseEstimator:
    # Each boosting iteration builds histograms in one pass over the rows. One thread, 57
    # columns, synthetic binary data: a fit on 800,000 rows took 73 to 119 s for a held-out
    # ROC AUC of 0.9422; on 200,000 rows 13 s for 0.9421 (hence GRADIENT_BOOSTING_MAX_ROWS).
    early = s.n_rows > GRADIENT_BOOSTING_EARLY_STOPPING_MIN_ROWS
    return _capped(cls(early_stopping=early, random_state=s.seed), s, GRADIENT_BOOSTING_MAX_ROWS)


def _mlp_regression(s: ModelSettings) -> BaseEstimator:
    # Fitted on the standardised target, as the SVR: adam's step size assumes outputs of unit
    # scale, and on a raw count target a network learns slowly, runs into its iteration cap
    # and moves with the seed. On the standardised target it stops early, and ten epochs of
    # patience (scikit-learn's default) stopped it too soon: bikeshare r2 0.891; 0.905 with
    # MLP_REGRESSION_PATIENCE epochs, in 6 s a fit (the raw-target network: 0.902, in 9 s).
    early = s.n_rows >= MLP_REGRESSION_EARLY_STOPPING_MIN_ROWS
    network = MLPRegressor(**_mlp_params(s), early_stopping=early, n_iter_no_change=MLP_REGRESSION_PATIENCE)
    return _capped(TransformedTargetRegressor(network, transformer=StandardScaler()), s, MLP_MAX_ROWS)


def _mlp_classification(s: ModelSettings) -> BaseEstimator:
    network = MLPClassifier(**_mlp_params(s))
    if s.n_rows < MLP_EARLY_STOPPING_MIN_ROWS:
        return network
    return _capped(EarlyStoppingClassifier(network, max_iter=network.max_iter, random_state=s.seed), s, MLP_MAX_ROWS)


def describe_strategy(estimator: BaseEstimator) -> str:
    """What an estimator does about data size, in words, read off the estimator itself.

    Args:
        estimator: An unfitted candidate estimator (the model step), possibly wrapped.

    Returns:
        E.g. "RBF kernel approximated by Nystroem(300) + linear SVM; learns from 50,000
        sampled rows"; "" when nothing depends on size.
    """
    parts: list[str] = []
    components = [estimator, *estimator.get_params(deep=True).values()]
    stopped = any(isinstance(part, EarlyStoppingClassifier) for part in components)
    for part in components:
        if isinstance(part, (SVC, SVR)):
            parts.append("exact RBF kernel")
        elif isinstance(part, Nystroem):
            parts.append(f"RBF kernel approximated by Nystroem({part.n_components}) + linear SVM")
        elif isinstance(part, (RandomForestClassifier, RandomForestRegressor)) and part.max_samples:
            parts.append(f"each tree on a bootstrap sample of {part.max_samples:,} rows")
        elif isinstance(part, EarlyStoppingClassifier):
            parts.append("early stopping on validation log loss")
        elif isinstance(part, (MLPClassifier, MLPRegressor)) and not stopped:
            parts.append("early stopping on validation r2" if part.early_stopping else "trained to convergence")
        elif isinstance(part, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
            rounds = f"{part.max_iter} boosting iterations"
            parts.append(f"early stopping on validation loss, at most {rounds}" if part.early_stopping else rounds)
        elif isinstance(part, RowSubsample) and part.max_rows:
            parts.append(f"learns from {part.max_rows:,} sampled rows")
    return "; ".join(dict.fromkeys(parts))


@dataclass(frozen=True)
class ModelSpec:
    """One candidate family, everything about it: adding a model is one entry of `MODELS`.

    Attributes:
        regression: Factory of the regression estimator. A factory makes its own
            size-dependent choices from `ModelSettings.n_rows` (subsampling, kernel
            approximation, early stopping); `describe_strategy` reads them off the estimator.
        classification: Factory of the classification estimator.
        complexity: Rank from simplest (0, the baseline) up: how hard the fitted model is
            to read and how much it costs to keep and run. The default selection rule
            picks the lowest among the candidates practically as good as the best.
        space: Its search space for `--tune` (`stages.tuning`), on base parameter names
            (`C`, `max_depth`): scipy.stats distributions or lists. Empty: no tuned variant.
        trusted_types: Types its fitted estimator holds beyond skops' defaults, reviewed as
            safe to load (loading them runs no user code): without them the model fails to
            save in skops format, at the end of a run.
    """

    regression: Callable[[ModelSettings], BaseEstimator]
    classification: Callable[[ModelSettings], BaseEstimator]
    complexity: int = 99
    space: Mapping[str, Any] = field(default_factory=dict)
    trusted_types: tuple[str, ...] = ()

    def build(self, settings: ModelSettings) -> BaseEstimator:
        """A new, unfitted estimator for the settings' task."""
        factory = self.regression if settings.task == REGRESSION else self.classification
        return factory(settings)


COMMON_TRUSTED_TYPES = ("numpy.dtype",)
"""Types beyond skops' defaults that any fitted pipeline may hold (a column's dtype)."""
_TREE = "sklearn.tree._tree.Tree"
"""The nodes of a fitted decision tree (forests and AdaBoost are made of them)."""
MODELS: dict[str, ModelSpec] = {
    "baseline": ModelSpec(
        regression=lambda s: DummyRegressor(strategy="mean"),
        classification=lambda s: DummyClassifier(strategy="prior"),
        complexity=0,  # the floor is never tuned
    ),
    "linear": ModelSpec(
        regression=lambda s: LinearRegression(),
        classification=lambda s: LogisticRegression(max_iter=1000, random_state=s.seed),
        complexity=1,  # one coefficient per feature column
        # LogisticRegression's inverse regularisation; LinearRegression has no hyperparameter
        # worth searching, so regression gets no `linear:tuned`.
        space={"C": loguniform(1e-3, 1e3)},
    ),
    "svm": ModelSpec(
        regression=_svm_regression,
        classification=_svm_classification,
        complexity=5,  # a kernel over stored support vectors: predict cost grows with training rows
        # The RBF kernel's C and gamma (the features are standardised: the default gamma,
        # 'scale', is about 1 / number of features); epsilon only for SVR, on the
        # standardised target. A kernel approximation has its gamma on the approximation.
        space={"C": loguniform(1e-2, 1e3), "gamma": loguniform(1e-3, 1e1), "epsilon": loguniform(1e-3, 1.0)},
        trusted_types=("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"),
    ),
    "random_forest": ModelSpec(
        regression=lambda s: _forest(s, RandomForestRegressor),
        classification=lambda s: _forest(s, RandomForestClassifier),
        complexity=4,  # 100 deep trees: nodes grow with the training rows
        space={"max_depth": [None, 4, 8, 16], "min_samples_leaf": [1, 2, 5, 10], "max_features": ["sqrt", 0.5, 1.0]},
        trusted_types=(_TREE,),
    ),
    "adaboost": ModelSpec(
        regression=lambda s: _capped(AdaBoostRegressor(random_state=s.seed), s, BOOSTING_MAX_ROWS),
        classification=lambda s: _capped(AdaBoostClassifier(random_state=s.seed), s, BOOSTING_MAX_ROWS),
        complexity=2,  # 50 shallow trees (stumps for classification)
        space={"n_estimators": [25, 50, 100, 200], "learning_rate": loguniform(1e-2, 2.0)},
        trusted_types=(_TREE,),
    ),
    "mlp": ModelSpec(
        # ReLU hidden units; identity output with squared error for regression, logistic or
        # softmax output with cross-entropy for classification (scikit-learn picks the
        # output from the target). Early stopping from MLP_REGRESSION_EARLY_STOPPING_MIN_ROWS
        # rows for regression, MLP_EARLY_STOPPING_MIN_ROWS for classification.
        regression=_mlp_regression,
        classification=_mlp_classification,
        complexity=6,  # thousands of weights, the least readable
        space={"alpha": loguniform(1e-6, 1e-1), "learning_rate_init": loguniform(1e-4, 1e-2)},
        trusted_types=(
            "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
            "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        ),
    ),
    "gradient_boosting": ModelSpec(
        # Histogram-based gradient boosting (LightGBM's algorithm): squared error for
        # regression, log loss for classification, scikit-learn's defaults otherwise.
        regression=lambda s: _gradient_boosting(s, HistGradientBoostingRegressor),
        classification=lambda s: _gradient_boosting(s, HistGradientBoostingClassifier),
        # Up to 100 trees of at most 31 leaves: more than AdaBoost's 50 shallow trees, far
        # fewer nodes than a forest's 100 fully grown trees (whose size grows with the rows).
        complexity=3,
        # The step size, the size of each tree and two regularisers, around scikit-learn's
        # defaults (0.1, 31 leaves, 20 rows a leaf, no L2 penalty); at most 100 iterations.
        space={
            "learning_rate": loguniform(0.03, 0.3),
            "max_leaf_nodes": [7, 15, 31, 63],
            "min_samples_leaf": [5, 10, 20, 50],
            "l2_regularization": [0.0, 0.1, 1.0, 10.0],
        },
        # Each tree of a fitted HistGradientBoosting model: arrays of nodes and category bitsets.
        trusted_types=("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    ),
}
"""Candidates by short name. `baseline` is the floor every model must beat."""


def search_spaces() -> dict[str, Mapping[str, Any]]:
    """Every family's search space for `--tune` (`stages.tuning.tuned_candidates`), by name."""
    return {name: spec.space for name, spec in MODELS.items()}


def trusted_types() -> list[str]:
    """The types beyond skops' defaults that a fitted candidate may hold, for saving and loading the model."""
    return sorted({*COMMON_TRUSTED_TYPES, *(t for spec in MODELS.values() for t in spec.trusted_types)})


def _mlp_params(s: ModelSettings) -> dict[str, Any]:
    return {
        "hidden_layer_sizes": s.mlp_hidden_layers,
        "activation": "relu",
        "solver": "adam",
        "max_iter": 500,
        "random_state": s.seed,
    }


def build_candidates(names: Sequence[str], preprocessor: BaseEstimator, settings: ModelSettings) -> dict[str, Pipeline]:
    """Unfitted pipelines, preprocessing first, one per named candidate.

    Args:
        names: Short names from `MODELS`.
        preprocessor: The unfitted preprocessor; each pipeline gets its own clone.
        settings: Task and seed for the factories.

    Returns:
        `{name: Pipeline([("prepare", preprocessor), ("model", estimator)])}`.
    """
    return {
        name: Pipeline([("prepare", clone(preprocessor)), ("model", MODELS[name].build(settings))]) for name in names
    }


VARIANT_COMPLEXITY = 0.5
"""Added to a family's complexity for a variant of it (`svm:tuned`): just above its default and
below the next family, so that the default is chosen when the two are practically as good."""


def complexity(name: str) -> float:
    """A candidate's complexity rank, variants (`svm:tuned`) included.

    Args:
        name: A candidate name, `svm` or `svm:tuned`.

    Returns:
        The family's `ModelSpec.complexity`, plus `VARIANT_COMPLEXITY` for a variant;
        infinity for a name not in `MODELS`.
    """
    spec = MODELS.get(default_name(name))
    if spec is None:
        return math.inf
    return spec.complexity + (VARIANT_COMPLEXITY if is_tuned(name) else 0.0)
