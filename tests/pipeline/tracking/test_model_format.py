"""How a model is saved (`pipeline.tracking.model_format`): its signature, and the pyfunc flavor pointed at the shipped loader."""

from __future__ import annotations

import json

import mlflow.pyfunc
import mlflow.sklearn
from mlflow.models import Model

from pipeline.tracking import model_format
from stages.contract import CONTRACT_KEY
from stages.model_registry import trusted_types


def test_a_model_without_a_contract_gets_the_signature_of_its_inputs_and_predictions(trained_on_raw):
    _, model, X, _, _ = trained_on_raw
    signature = model_format.signature(model, X, None)
    assert signature.inputs.input_names() == list(X.columns)
    assert signature.outputs is not None


def test_a_model_with_a_contract_has_no_input_schema_and_outputs_a_prediction_and_probabilities(trained_on_raw):
    raw, model, _, contract, _ = trained_on_raw
    signature = model_format.signature(model, raw.loc[:, list(contract.inputs)], contract.to_dict())
    assert signature.inputs is None  # the contract is the schema: ints, floats and text numbers all read
    assert signature.outputs.input_names() == ["prediction", "proba_no", "proba_yes"]


def test_the_contract_flavor_keeps_sklearn_and_points_pyfunc_at_the_shipped_loader(trained_on_raw, tmp_path):
    raw, model, X, contract, _ = trained_on_raw
    assert model_format.CONTRACT_FLAVOR.__name__ == "mlflow.sklearn"
    assert model_format.CONTRACT_FLAVOR.save_model is model_format.save_with_contract_loader
    folder = tmp_path / "model"
    model_format.save_with_contract_loader(
        str(folder),
        Model(),
        sk_model=model,
        code_paths=[str(model_format.PYFUNC_LOADER)],
        metadata={CONTRACT_KEY: json.dumps(contract.to_dict())},
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=trusted_types(),
        pip_requirements=[],
    )
    saved = Model.load(str(folder))
    assert saved.flavors["python_function"]["loader_module"] == model_format.PYFUNC_LOADER.stem == "crispml_pyfunc"
    assert (folder / "code" / model_format.PYFUNC_LOADER.name).is_file()
    assert (mlflow.sklearn.load_model(str(folder)).predict(X) == model.predict(X)).all()  # the sklearn flavor as it was
    scored = mlflow.pyfunc.load_model(str(folder)).predict(raw)  # raw rows, as a file like the training file reads
    assert list(scored.columns) == ["prediction", "proba_no", "proba_yes"]
    assert (scored["prediction"].to_numpy() == model.predict(X)).all()
