"""How a crispml model is saved in MLflow's format: skops with reviewed types, a signature from its data contract, and its own pyfunc loader.

A model with a contract is saved through the sklearn flavor with `CONTRACT_FLAVOR`, which
points the `python_function` flavor at the loader shipped in the model's `code/` folder
(`pipeline/tracking/crispml_pyfunc.py`), so plain MLflow scores raw rows as crispml does.
`prewarm` imports what saving needs while the fits run.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.models import Model, ModelSignature, infer_signature

from pipeline.tracking import crispml_pyfunc

PYFUNC_LOADER = Path(crispml_pyfunc.__file__)
"""The loader shipped in each model's `code/` folder (`pipeline/tracking/crispml_pyfunc.py`)."""
PREWARMED = ("skops.io", "mlflow.pyfunc", "mlflow.models.signature")
"""Modules `log_model` imports on first use: skops alone takes about a second."""


def prewarm() -> None:
    """Import what logging the model will need in a background thread, while the fits run.

    The fits run in worker processes and this process mostly waits for them, so the
    imports cost nothing on the way to the answer. Imports only: nothing is written, and a
    module that fails to import here is imported (and fails) where it is used.
    """

    def warm() -> None:
        for name in PREWARMED:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=warm, name="crispml-prewarm", daemon=True).start()


def signature(model: Any, input_example: pd.DataFrame, contract: Mapping[str, Any] | None) -> Any:
    """The outputs `predict` gives; no input schema for a model with a contract, which is its schema.

    MLflow's column types cannot say "an integer column, or floats once a value is missing":
    a signature refuses int64 rows for a double column and float64 rows for a long one, so
    `pd.read_csv` of a file like the training file would fail. The contract, enforced by the
    shipped loader (`pipeline.tracking.crispml_pyfunc`), takes both.
    """
    if contract is None:
        return infer_signature(input_example, model.predict(input_example))
    outputs = crispml_pyfunc.ContractModel(model, dict(contract)).predict(input_example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer *input* columns: there is no input schema
        return ModelSignature(inputs=None, outputs=infer_signature(outputs).inputs)


def save_with_contract_loader(path: str, mlflow_model: Model, **kwargs: Any) -> None:
    """`mlflow.sklearn.save_model`, with the pyfunc flavor loaded by the shipped `crispml_pyfunc.py`.

    The sklearn flavor stays as it is (`mlflow.sklearn.load_model` gives the pipeline); the
    pyfunc one (`mlflow.pyfunc`, `mlflow models serve`) checks rows against the data contract
    and returns `prediction` and `proba_<class>`, as `crispml predict` does.
    """
    mlflow.sklearn.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
    mlflow_model.flavors["python_function"]["loader_module"] = PYFUNC_LOADER.stem
    mlflow_model.save(os.path.join(path, "MLmodel"))


CONTRACT_FLAVOR = types.SimpleNamespace(__name__="mlflow.sklearn", save_model=save_with_contract_loader)
