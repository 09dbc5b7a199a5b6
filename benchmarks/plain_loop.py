"""The baseline crispml is measured against: the loop a data scientist writes by hand.

Same candidates (every entry of crispml's registry `stages.model_registry.MODELS`, which is
crispml's default candidate list, gradient boosting included; so the same estimators and
hyperparameters), same preprocessing steps, same holdout and folds, scored with the same
metrics, one `cross_validate(..., n_jobs=-1)` per model, then the best mean score refitted
and scored on the holdout. No profiling, no tracking, no export, no racing. Prints one JSON
object: the chosen model, its CV score, every candidate's score and cross-validation seconds,
the holdout score, and the seconds since the process started.

    python benchmarks/plain_loop.py --data data/bikeshare.csv --target bikers --task regression
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

start = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.compose import ColumnTransformer, make_column_selector  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from stages.model_registry import MODELS, ModelSettings

SCORING = {
    "regression": ["r2", "neg_root_mean_squared_error", "neg_mean_absolute_error"],
    "classification": ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "neg_log_loss"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--task", choices=["regression", "binary", "multiclass"], required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    data = pd.read_parquet(args.data) if args.data.endswith(".parquet") else pd.read_csv(args.data)
    data = data[data[args.target].notna()]
    y = data[args.target]
    X = data.drop(columns=args.target)
    classification = args.task != "regression"
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=args.seed, stratify=y if classification else None
    )
    splitter = (StratifiedKFold if classification else KFold)(args.folds, shuffle=True, random_state=args.seed)
    folds = list(splitter.split(X_train, y_train))
    prepare = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
             make_column_selector(dtype_include="number")),
            ("categorical", Pipeline([
                ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.01, max_categories=20, sparse_output=False)),
            ]), make_column_selector(dtype_exclude="number")),
        ]
    )
    settings = ModelSettings(args.task, args.seed, n_rows=len(y_train))
    primary = "r2" if not classification else ("roc_auc_ovr" if args.task == "binary" else "balanced_accuracy")
    scores, seconds = {}, {}
    for name, spec in MODELS.items():
        model = Pipeline([("prepare", prepare), ("model", spec.build(settings))])
        started = time.perf_counter()
        cv = cross_validate(model, X_train, y_train, cv=folds, scoring=SCORING["classification" if classification else "regression"], n_jobs=-1)
        seconds[name] = round(time.perf_counter() - started, 2)
        scores[name] = float(np.mean(cv[f"test_{primary}"]))
    best = max(scores, key=scores.get)
    final = Pipeline([("prepare", prepare), ("model", MODELS[best].build(settings))]).fit(X_train, y_train)
    holdout = float(final.score(X_test, y_test))
    print(json.dumps({"chosen_model": best, "cv": scores[best], "metric": primary, "holdout_default_score": holdout,
                      "candidates": list(scores), "scores": scores, "cv_seconds": seconds, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
