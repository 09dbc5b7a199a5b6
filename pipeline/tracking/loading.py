"""Loading a saved model by folder or `models:/` URI, its files checked against the hashes recorded when it was logged.

`record_model_files` stores each logged model's file hashes in the tracking database, apart
from its artifacts; `load_model` and `scoring_app` (for `crispml serve`) download or read the
model, check every file against them (or against an exported folder's manifest), and
return it with its data contract and any version warnings.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.models import Model

from pipeline import interrupts
from pipeline.errors import CrispmlError, ModelLoadError, first_line
from pipeline.exports import is_bytecode_cache
from pipeline.files import sha256_of
from pipeline.tracking.model_format import PYFUNC_LOADER
from pipeline.tracking.store import check_store, for_mlflow, point_mlflow_at, sqlite_file
from stages.contract import CONTRACT_KEY, DataContract, contract_from_signature


@dataclass(frozen=True)
class LoadedModel:
    """A saved model, the data contract saved with it, and what to warn about.

    Attributes:
        model: The fitted scikit-learn pipeline.
        contract: The data contract from the model's metadata (names and kinds from its
            signature only, for a model saved without one).
        warnings: Package versions that differ from the ones that saved the model.
    """

    model: Any
    contract: DataContract
    warnings: tuple[str, ...] = ()


def copy_logged_model(model_uri: str, path: Path, tracking_uri: str) -> None:
    """Copy a logged model's folder out of the store, byte for byte (no second serialisation).

    Args:
        model_uri: The URI `log_model` returned (`models:/m-...`).
        path: A folder that must not exist yet.
        tracking_uri: The store it was logged to.
    """
    Path(path).mkdir(parents=True)
    # Held: a signal raised inside the store's SQLite read surfaces as SQLAlchemy's OperationalError, not as the
    # interruption it is (seen: SIGTERM while the export was staged ended in a traceback and exit 1).
    with interrupts.held():
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(path), tracking_uri=for_mlflow(tracking_uri))


def is_model_uri(source: str) -> bool:
    """Whether a model source is a URI (`models:/...`, `runs:/...`, `s3://...`) rather than a folder.

    Args:
        source: A model folder or URI, as given to `--model`.

    Returns:
        True for a URI.
    """
    return "://" in source or source.startswith(("models:", "runs:"))


@contextmanager
def _loading(source: str, tracking_uri: str) -> Iterator[None]:
    """Check that a model folder has an `MLmodel` file and point MLflow at the store; load in the block.

    Raises:
        ModelLoadError: The folder has no `MLmodel` file, or loading in the block failed
            (crispml's own errors raised in the block pass unchanged).
    """
    if not is_model_uri(source) and not (Path(source) / "MLmodel").is_file():
        raise ModelLoadError(
            f"no model at {source}: the folder has no MLmodel file; pass a model folder "
            "(<out>/<experiment>/model) or a URI such as models:/<experiment>@champion"
        )
    point_mlflow_at(tracking_uri)
    try:
        yield
    except CrispmlError:
        raise
    except Exception as exc:  # MLflow raises many types for a missing model
        first = first_line(exc)
        raise ModelLoadError(
            f"cannot load the model {source} ({first[:200]}); check the path or URI and --tracking-uri"
        ) from None


FILES_TAG = "crispml.files_sha256"
"""The logged model's tag, in the tracking database, that holds `{file: SHA-256}` of its files as logged."""
_ADDED_ON_DOWNLOAD = "registered_model_meta"  # MLflow writes it into every models:/ download; the store has none


def record_model_files(client: Any, model_id: str, tracking_uri: str) -> dict[str, str]:
    """Record the SHA-256 of a logged model's files, as they are in the store, in a tag of the logged model.

    The hashes live in the tracking database, apart from the artifacts, so `load_model` and
    `scoring_app` can check a `models:/` or `runs:/` model's files before loading them.

    Args:
        client: An `MlflowClient` on the store.
        model_id: The logged model's id (`m-...`).
        tracking_uri: The store.

    Returns:
        `{relative path: SHA-256}`.
    """
    with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
        folder = _download(f"models:/{model_id}", Path(tmp), tracking_uri)
        files = _file_hashes(folder)
    client.set_logged_model_tags(model_id, {FILES_TAG: json.dumps(files, sort_keys=True)})
    return files


def _download(uri: str, into: Path, tracking_uri: str) -> Path:
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow draws a download progress bar
        with interrupts.held():  # as in copy_logged_model: a signal inside a store read must not become a store error
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into), tracking_uri=for_mlflow(tracking_uri)))


def _file_hashes(folder: Path) -> dict[str, str]:
    """`{file: SHA-256}` of a model folder, without Python's bytecode caches (`bytecode_caches`)."""
    return {
        p.relative_to(folder).as_posix(): sha256_of(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != _ADDED_ON_DOWNLOAD and not is_bytecode_cache(p.relative_to(folder))
    }


def _logged_model_id(client: Any, uri: str, depth: int = 0) -> str | None:
    """The logged model (`m-...`) a `models:/` or `runs:/` URI names, found in the tracking database.

    Returns None for a model logged without one (before MLflow 3), or a URI that names no logged model.
    """
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if uri.startswith("models:"):
        found = get_model_name_and_version(client, uri)
        if len(found) == 1:
            return str(found[0])
        version = client.get_model_version(*found)
        if getattr(version, "model_id", None):
            return str(version.model_id)
        source = str(version.source or "")
        return _logged_model_id(client, source, depth + 1) if depth < 2 and source.startswith(("models:", "runs:")) else None
    if not uri.startswith("runs:"):
        return None
    run_id, name = RunsArtifactRepository.parse_runs_uri(uri)
    if not name or "/" in name.strip("/"):
        return None
    experiment = client.get_run(run_id).info.experiment_id
    token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[experiment], filter_string=f"name = '{name.strip('/')}'", page_token=token
        )
        for logged in page:
            if logged.source_run_id == run_id:
                return str(logged.model_id)
        token = page.token
        if not token:
            return None


@contextmanager
def _checked_copy(source: str, tracking_uri: str) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """A local folder holding the model at `source`, checked against its recorded hashes; yields it and warnings.

    A folder is yielded as it is (`verify_export` checks it). A `models:/` or `runs:/` URI is
    resolved in the tracking database to its logged model, whose files are downloaded to a
    temporary folder and checked against the hashes `record_model_files` kept; the model
    is then loaded from that folder, so what is loaded is what was checked. A model with no
    recorded hashes (logged by another tool or an older crispml), or any other URI, is
    downloaded and loaded with a warning that it could not be checked.

    Raises:
        TrackingError: The store cannot be used.
        ModelLoadError: The store does not exist, or a file differs from what was logged.
    """
    if not is_model_uri(source):
        # A copy without bytecode caches: loading a model folder (plain `mlflow.pyfunc` does)
        # writes `code/__pycache__/`, which the checks skip, so crispml never runs one.
        with tempfile.TemporaryDirectory(prefix="crispml-model-") as tmp:
            copy = Path(tmp) / "model"
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
            yield copy, ()
        return
    in_store = source.startswith(("models:", "runs:"))
    if in_store:
        database = sqlite_file(tracking_uri)
        if database is not None and not database.exists():
            raise ModelLoadError(
                f"no MLflow store at {database} ({tracking_uri}) to look up {source} in; pass the store "
                "'crispml run' wrote to with --tracking-uri, or a model folder"
            )
        check_store(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="crispml-model-") as tmp:
        client = MlflowClient(for_mlflow(tracking_uri), registry_uri=for_mlflow(tracking_uri))
        model_id = _logged_model_id(client, source) if in_store else None
        recorded = None
        if model_id is not None:
            recorded = client.get_logged_model(model_id).tags.get(FILES_TAG)
        folder = _download(f"models:/{model_id}" if model_id else source, Path(tmp), tracking_uri)
        for cache in list(folder.rglob("__pycache__")):  # never run a bytecode cache (see `is_bytecode_cache`)
            shutil.rmtree(cache, ignore_errors=True)
        if recorded is None:
            why = "it has no file hashes recorded in the store (logged by another tool or an older crispml)" if in_store else "it is not in an MLflow store"
            warning = (
                f"{source} could not be checked before loading: {why}; to have its files checked, "
                "log it with 'crispml run' and load it by models:/<experiment>@champion"
            )
            yield folder, (warning,)
            return
        _check_files(folder, recorded, source if model_id in source else f"{source} (logged model {model_id})")
        yield folder, ()


def _check_files(folder: Path, recorded: str, label: str) -> None:
    """The downloaded files are exactly the ones recorded when the model was logged."""
    fix = "restore the model's files in the store, or log the model again with 'crispml run'"
    try:
        expected = json.loads(recorded)
    except json.JSONDecodeError:
        expected = None
    if not isinstance(expected, dict) or not expected:
        raise ModelLoadError(f"the file hashes recorded for {label} ({FILES_TAG}) are unreadable, so it is not loaded; {fix}")
    present = _file_hashes(folder)
    for name, digest in sorted(expected.items()):
        if name not in present:
            raise ModelLoadError(f"{label} is missing {name} in the store, which was there when it was logged, so it is not loaded; {fix}")
        if present[name] != digest:
            raise ModelLoadError(
                f"{name} of {label} does not match the SHA-256 recorded when it was logged: it changed in the store, "
                f"so it is not loaded; {fix}"
            )
    extra = sorted(set(present) - set(expected))
    if extra:
        raise ModelLoadError(
            f"{label} holds {', '.join(extra)} in the store, which was not there when it was logged, so it is not loaded; {fix}"
        )


def load_model(source: str, tracking_uri: str) -> LoadedModel:
    """Load a model by folder or URI (`models:/name@champion`, `models:/m-...`, `runs:/...`).

    A URI's files are first downloaded and checked against the hashes recorded in the
    tracking database when the model was logged (see `_checked_copy`); a folder is loaded
    as it is (check it first with `verify_export`).

    Args:
        source: A model folder written by crispml, or a model URI.
        tracking_uri: The store to resolve `models:/` and `runs:/` URIs against.

    Returns:
        The model, its data contract, and warnings: a model that could not be checked,
        package versions that differ.

    Raises:
        TrackingError: The store named for a `models:/` or `runs:/` URI cannot be used.
        ModelLoadError: Nothing loadable is there, a file in the store changed after the
            model was logged, or its data contract is malformed.
    """
    with _loading(source, tracking_uri), _checked_copy(source, tracking_uri) as (folder, unchecked):
        info = Model.load(str(folder))
        model = mlflow.sklearn.load_model(str(folder))
    contract = model_contract(info, source)
    return LoadedModel(
        model=model,
        contract=contract,
        warnings=(*unchecked, *version_warnings(info, source)),
    )


def model_contract(info: Any, source: str) -> DataContract:
    """The data contract saved in a model's metadata, or one from its signature for a model saved without.

    Args:
        info: The model's `Model` or `ModelInfo` (from its `MLmodel` file).
        source: Where it came from, for messages.

    Returns:
        The contract.

    Raises:
        ModelLoadError: The saved contract is malformed.
    """
    saved = (info.metadata or {}).get(CONTRACT_KEY)
    if saved is not None:
        try:  # a JSON string since 2026-12 (a YAML tree before: still read)
            return DataContract.from_dict(json.loads(saved) if isinstance(saved, str) else saved)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"the data contract saved with {source} is malformed ({exc}); re-export the model") from None
    signature = info.signature
    inputs = signature.inputs.to_dict() if signature is not None else []
    features = tuple(col["name"] for col in inputs)
    numeric = tuple(col["name"] for col in inputs if col["type"] in ("double", "float", "long", "integer"))
    return contract_from_signature(features, numeric)


def version_warnings(info: Any, source: str) -> tuple[str, ...]:
    """Warnings for scikit-learn and MLflow versions that differ from the ones that saved a model.

    Args:
        info: The model's `Model` or `ModelInfo`.
        source: Where it came from, for messages.

    Returns:
        One line per differing package.
    """
    saved = {
        "scikit-learn": (info.flavors or {}).get("sklearn", {}).get("sklearn_version"),
        "mlflow": info.mlflow_version,
    }
    warnings = []
    for package, version in saved.items():
        try:
            installed = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            installed = "none"
        if version and installed != version:
            warnings.append(
                f"{source} was saved with {package} {version} but {installed} is installed; predictions may "
                f"differ: install {package}=={version} to be sure"
            )
    return tuple(warnings)


@dataclass(frozen=True)
class ScoringApp:
    """MLflow's scoring server for one model, the model's data contract, and what to warn about.

    Attributes:
        app: The ASGI application (`/ping`, `/health`, `/version`, `/invocations`).
        contract: The data contract saved with the model (names and kinds from its
            signature only, for a model saved without one).
        warnings: A model that could not be checked before loading; package versions that differ.
        raw_rows: Its pyfunc is crispml's loader, which takes raw rows (models logged before it take cleaned ones).
    """

    app: Any
    contract: DataContract
    warnings: tuple[str, ...] = ()
    raw_rows: bool = False


def scoring_app(source: str, tracking_uri: str) -> ScoringApp:
    """Load a model as a pyfunc and build MLflow's scoring server for it (what `mlflow models serve` runs).

    A URI's files are checked against the hashes recorded when it was logged, as in `load_model`.

    Args:
        source: A model folder written by crispml, or a model URI (`models:/name@champion`).
        tracking_uri: The store to resolve `models:/` and `runs:/` URIs against.

    Returns:
        The server application, the model's data contract, and warnings.

    Raises:
        TrackingError: The store named for a `models:/` or `runs:/` URI cannot be used.
        ModelLoadError: Nothing loadable is there, a file in the store changed after the
            model was logged, or its data contract is malformed.
    """
    from mlflow.pyfunc import scoring_server

    with _loading(source, tracking_uri), _checked_copy(source, tracking_uri) as (folder, unchecked):
        model = mlflow.pyfunc.load_model(str(folder))  # the sklearn flavor holds the model in memory
    return ScoringApp(
        app=scoring_server.init(model),
        contract=model_contract(model.metadata, source),
        warnings=(*unchecked, *version_warnings(model.metadata, source)),
        raw_rows=model.metadata.flavors.get("python_function", {}).get("loader_module") == PYFUNC_LOADER.stem,
    )
