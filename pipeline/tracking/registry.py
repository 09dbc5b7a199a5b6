"""The model registry: the `champion` and `challenger` aliases, the record a champion keeps, and undoing a run's version.

A run creates its version with `PipelineRun.register` and moves an alias only in
`PipelineRun.commit`; `undo_registration` is what a run that did not succeed does instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from pipeline.errors import TrackingError, first_line

CHAMPION = "champion"
CHALLENGER = "challenger"
"""The alias of the latest version that passed its gate but not the comparison with `champion`."""
CHAMPION_RECORD = "challenge/record.npz"
"""The run artifact that lets a later run compare against this run's model fairly (`stages.challenge`)."""
CHAMPION_RECORD_TAG = "crispml.challenge_record_sha256"
"""The record's SHA-256, a tag of its run: a record edited in the store is not used."""


@dataclass(frozen=True)
class Champion:
    """The version a registered model's `champion` alias points at.

    Attributes:
        name: The registered model.
        version: Its version number.
        run_id: The run that logged it.
        uri: `models:/<name>/<version>`: this version, even if the alias moves meanwhile.
        record: Its run's `challenge/record.npz`, or None (a model logged before records were kept,
            or a record that fails its check).
        record_problem: Why a record that is there is not used ("" when it is, or there is none).
    """

    name: str
    version: str
    run_id: str
    uri: str
    record: bytes | None
    record_problem: str = ""


def alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when it is not set."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def find_champion(client: Any, name: str, tracking_uri: str) -> Champion | None:
    """The registered model's current `champion`: its version, its run and the record that run kept.

    Args:
        client: An `MlflowClient` of the store.
        name: The registered model's name.
        tracking_uri: The store, for messages.

    Returns:
        None when the model is not registered or has no `champion`.

    Raises:
        TrackingError: The store could not be read.
    """
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # no such model, or no alias
            return None
        first = first_line(exc)
        raise TrackingError(
            f"cannot look up the champion of `{name}` in the registry at {tracking_uri} ({first[:200]}); "
            "the run compares a new model with it before it moves: check the store and run again"
        ) from None
    record, problem = None, ""
    try:
        folder = str(Path(CHAMPION_RECORD).parent)
        listed = {info.path for info in client.list_artifacts(version.run_id, folder)} if version.run_id else set()
        content = b""
        if CHAMPION_RECORD in listed:  # a record that is there but cannot be read is the store's failure, not "none"
            with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
                content = Path(client.download_artifacts(version.run_id, CHAMPION_RECORD, tmp)).read_bytes()
            expected = client.get_run(version.run_id).data.tags.get(CHAMPION_RECORD_TAG)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        first = first_line(exc)
        raise TrackingError(
            f"cannot read the record of champion version {version.version} of `{name}` from {tracking_uri} "
            f"({first[:200]}); the run compares a new model with it before it moves: check the store and run again"
        ) from None
    if CHAMPION_RECORD in listed:
        if expected is None:
            problem = f"was never sealed (its run has no {CHAMPION_RECORD_TAG} tag)"
        elif expected != hashlib.sha256(content).hexdigest():
            problem = f"does not match the SHA-256 its run recorded ({CHAMPION_RECORD_TAG}): it changed in the store"
        else:
            record = content
    return Champion(
        name=name,
        version=str(version.version),
        run_id=str(version.run_id or ""),
        uri=f"models:/{name}/{version.version}",
        record=record,
        record_problem=problem,
    )


def undo_registration(client: Any, run_id: str, name: str, version: str, alias: str, previous: str | None) -> None:
    """Leave the registry as a run that did not succeed found it: the alias back where it was, the run's versions gone.

    Best effort: each step that fails is skipped, since ending the run comes next.

    Args:
        client: An `MlflowClient` of the store.
        run_id: The run whose versions are deleted.
        name: The registered model.
        version: The version the run created ("" when none was).
        alias: The alias the run may have moved.
        previous: The version the alias named before (None when it was not set).
    """
    with contextlib.suppress(Exception):
        if version and alias_version(client, name, alias) == version:
            if previous is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, previous)
    with contextlib.suppress(Exception):
        for found in client.search_model_versions(f"run_id = '{run_id}'"):
            if found.name == name:
                client.delete_model_version(found.name, found.version)
