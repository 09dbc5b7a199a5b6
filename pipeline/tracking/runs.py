"""MLflow runs: one parent run per pipeline run, a child run per candidate, the logged model and its registry version.

The registry's aliases are `pipeline.tracking.registry`'s; nothing here decides anything,
it records what the stages returned.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import Model

from pipeline import interrupts
from pipeline.errors import TrackingError, first_line
from pipeline.tracking.loading import record_model_files
from pipeline.tracking.model_format import CONTRACT_FLAVOR, PYFUNC_LOADER, signature
from pipeline.tracking.registry import (
    CHAMPION,
    CHAMPION_RECORD,
    CHAMPION_RECORD_TAG,
    Champion,
    alias_version,
    find_champion,
    undo_registration,
)
from pipeline.tracking.store import artifact_root, for_mlflow, point_mlflow_at
from stages.contract import CONTRACT_KEY

MODEL_NAME = "model"
TAG_MAX = 5000
"""Longest tag value crispml writes (MLflow refuses a tag over 8,000 characters; reasons are cut at this)."""
_PARAM_MAX = 6000


@dataclass(frozen=True)
class LoggedModel:
    """Where the logged model went.

    Attributes:
        uri: The URI `log_model` returned (`models:/m-...`).
        registered_name: Registry name, or "" when not registered.
        version: Registry version, or "" when not registered.
    """

    uri: str
    registered_name: str = ""
    version: str = ""


RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"
"""The run page's description (markdown)."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's UI opens an experiment of this kind in its model-training view, not the GenAI one."""
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"
"""The experiment tag the MLflow UI charts first: crispml sets it to `holdout_<metric>` unless the user chose another."""


_Write = TypeVar("_Write", bound=Callable[..., Any])


def _store_write(method: _Write) -> _Write:
    """A write to the store, done whole: a signal that arrives during it is raised once it is done."""

    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        with interrupts.held():
            return method(*args, **kwargs)

    return write  # type: ignore[return-value]


class PipelineRun:
    """Logging for one pipeline run: the parent run, its candidates' child runs, and its registry version.

    Every method is one write to the store, done whole even if a signal arrives during it
    (`pipeline.interrupts`). The registry moves only in `commit`, the run's last step.
    """

    def __init__(self, client: Any, experiment_id: str, run_id: str, tracking_uri: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.committed = False
        self._registering = ""  # the registered model a version of this run is (being) created in
        self._version = ""
        self._alias = CHAMPION  # the alias `commit` moves
        self._previous: str | None = None  # the version the alias named before `commit` moved it
        self._ended = ""  # the status the run was ended with
        self._commit_tags: tuple[str, ...] = ()

    @_store_write
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flat parameters on the parent run."""

        self.client.log_batch(self.run_id, params=[Param(k, _param(v)) for k, v in params.items()])

    @_store_write
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the parent run."""

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_store_write
    def log_champion_record(self, content: bytes) -> None:
        """Save this run's champion record (`CHAMPION_RECORD`) with its SHA-256 as a tag, so an edit is noticed."""
        with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
            path = Path(tmp) / Path(CHAMPION_RECORD).name
            path.write_bytes(content)
            self.client.log_artifact(self.run_id, str(path), str(Path(CHAMPION_RECORD).parent))
        self.client.set_tag(self.run_id, CHAMPION_RECORD_TAG, hashlib.sha256(content).hexdigest())

    @_store_write
    def mark_primary_metric(self, metric: str) -> None:
        """Tell the MLflow UI the experiment's primary metric (`holdout_<metric>`), unless the user set another.

        Args:
            metric: The run's primary metric.
        """
        current = (self.client.get_experiment(self.experiment_id).tags or {}).get(PRIMARY_METRIC_TAG, "")
        if not current or current.startswith("holdout_"):
            self.client.set_experiment_tag(self.experiment_id, PRIMARY_METRIC_TAG, f"holdout_{metric}")

    @_store_write
    def describe(self, name: str, description: str) -> None:
        """Rename the parent run and give it a description (the run page's markdown note).

        Args:
            name: A name a person can tell apart from the others (the chosen model, its score).
            description: Markdown: why it was chosen, its holdout score, the gate.
        """
        self.client.log_batch(self.run_id, tags=[RunTag(RUN_NAME_TAG, name[:250]), RunTag(NOTE_TAG, description)])

    @_store_write
    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log metrics on the parent run; NaN values are skipped."""
        _log_metrics(self.client, self.run_id, metrics)

    @_store_write
    def log_json(self, obj: Any, path: str) -> None:
        """Save an object as a JSON artifact of the parent run."""
        self.client.log_text(self.run_id, json.dumps(obj, indent=2, default=str, allow_nan=False), path)

    @_store_write
    def log_text(self, text: str, path: str) -> None:
        """Save text as an artifact of the parent run."""
        self.client.log_text(self.run_id, text, path)

    @_store_write
    def log_frame(self, frame: pd.DataFrame, path: str) -> None:
        """Save a table as a CSV artifact of the parent run."""
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        self.client.log_text(self.run_id, buffer.getvalue(), path)

    @_store_write
    def log_files(self, files: Mapping[str, bytes], folder: str) -> None:
        """Save in-memory files (PNG plots, say) as artifacts of the parent run, in one upload.

        Args:
            files: `{file name: content}`.
            folder: The artifact folder they go in (`plots`, `understanding`).
        """
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="crispml-") as tmp:
            for name, content in files.items():
                (Path(tmp) / name).write_bytes(content)
            self.client.log_artifacts(self.run_id, tmp, folder)

    @_store_write
    def log_candidate(
        self,
        name: str,
        estimator: str,
        params: Mapping[str, str],
        ok: bool,
        error: str,
        fold_scores: Mapping[str, tuple[float, ...]],
        metrics: Mapping[str, float],
        warnings: tuple[str, ...],
        extra_tags: Mapping[str, str] | None = None,
    ) -> str:
        """One nested child run for a candidate: params, per-fold and summary metrics, status.

        Args:
            name: The candidate's short name (the run name).
            estimator: The estimator's class name.
            params: The estimator's parameters.
            ok: False for a candidate that failed.
            error: Its error, for a failed candidate.
            fold_scores: `{metric: per-fold scores}`, logged with the fold as the step.
            metrics: Summary metrics (means, standard deviations, timings).
            warnings: Warnings raised while fitting.
            extra_tags: More tags, e.g. where the fits ran.

        Returns:
            The child run's id.
        """

        tags = {
            "mlflow.parentRunId": self.run_id,
            "mlflow.runName": name,
            "crispml.candidate": name,
            "crispml.estimator": estimator,
            "crispml.status": "ok" if ok else "failed",
        }
        if error:
            tags["crispml.error"] = error[:_PARAM_MAX]
        if warnings:
            tags["crispml.warnings"] = "\n".join(warnings)[:_PARAM_MAX]
        tags.update({k: v[:_PARAM_MAX] for k, v in (extra_tags or {}).items()})
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        now = int(time.time() * 1000)
        entries = [
            Metric(f"fold_{metric}", value, now, step)
            for metric, scores in fold_scores.items()
            for step, value in enumerate(scores)
            if not math.isnan(value)
        ]
        entries += [Metric(k, v, now, 0) for k, v in metrics.items() if not math.isnan(v)]
        status = "FAILED"  # a child run is never left RUNNING, even when logging its results fails
        try:
            self.client.log_batch(
                run.info.run_id,
                metrics=entries,
                params=[Param(k, _param(v)) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items() if not k.startswith("mlflow.")],
            )
            status = "FINISHED" if ok else "FAILED"
        finally:
            self.client.set_terminated(run.info.run_id, status)
        return str(run.info.run_id)

    @_store_write
    def log_model(
        self,
        model: Any,
        input_example: pd.DataFrame,
        requirements: list[str],
        trusted_types: Sequence[str],
        metadata: Mapping[str, Any] | None = None,
    ) -> LoggedModel:
        """Log the model to the parent run, unregistered (`register` and `commit` do that).

        Its files' SHA-256 are recorded in the tracking database (`record_model_files`), so
        loading it by URI checks them.

        Args:
            model: The fitted pipeline.
            input_example: A few input rows, for the signature and the UI.
            requirements: pip requirements (given, so MLflow does not infer them).
            trusted_types: The types beyond skops' defaults the model may hold
                (`stages.model_registry.trusted_types`); anything else fails to save or load.
            metadata: Stored in the model's `MLmodel` file (the data contract travels there),
                each value as one JSON string: MLflow parses that file (pure-Python YAML)
                several times while logging, and on 3,000 columns a YAML tree of the
                contract alone took 25 s to parse.

        Returns:
            Where it was logged.
        """
        contract = (metadata or {}).get(CONTRACT_KEY)
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=CONTRACT_FLAVOR if contract is not None else mlflow.sklearn,
            sk_model=model,
            signature=signature(model, input_example, contract),
            input_example=input_example,
            pip_requirements=requirements,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(trusted_types),
            code_paths=[str(PYFUNC_LOADER)] if contract is not None else None,
            metadata={k: json.dumps(v, separators=(",", ":")) for k, v in metadata.items()} if metadata else None,
        )
        record_model_files(self.client, info.model_id, self.tracking_uri)  # checked whenever it is loaded by URI
        return LoggedModel(uri=info.model_uri)

    @_store_write
    def register(self, logged: LoggedModel, name: str, description: str = "", model_description: str = "") -> LoggedModel:
        """Create a new version of the registered model `name` from the logged model; move no alias.

        The version is tagged `crispml.run_id`. Unless `commit` follows, the end of the run
        deletes it again (`pipeline_run`).

        Args:
            logged: What `log_model` returned.
            name: The registered model's name (created if new).
            description: The new version's description (the registry's page for it).
            model_description: The registered model's description, set when it has none yet.

        Returns:
            The logged model with its registry name and version.
        """
        self._registering = name  # set first: a version created by a call that then fails is found by its run
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints registry progress
            version = mlflow.register_model(logged.uri, name, tags={"crispml.run_id": self.run_id})
        self._version = str(version.version)
        if description:
            self.client.update_model_version(name, self._version, description=description)
        if model_description and not self.client.get_registered_model(name).description:
            self.client.update_registered_model(name, description=model_description)
        return LoggedModel(uri=logged.uri, registered_name=name, version=self._version)

    @_store_write
    def champion(self, name: str) -> Champion | None:
        """The registered model's current `champion`: its version, its run and the record that run kept.

        Args:
            name: The registered model's name.

        Returns:
            None when the model is not registered or has no `champion`.
        """
        return find_champion(self.client, name, self.tracking_uri)

    @_store_write
    def commit(self, tags: Mapping[str, Any] | None = None, alias: str = CHAMPION) -> None:
        """The run's last step: set its closing tags, end it FINISHED, then point `alias` at its version.

        The alias moves only once the run has succeeded, so a process killed at any moment
        leaves it on a finished run, or where it was. Calling it again does nothing.

        Args:
            tags: Tags that hold only for a run that succeeded (where its export is); removed
                again if the commit fails.
            alias: `champion`, or `challenger` for a version that lost the comparison with it.

        Raises:
            TrackingError: The store refused a write; the run then ends FAILED (`pipeline_run`).
        """
        if self.committed:
            return
        try:
            if tags:
                self._commit_tags = tuple(tags)
                self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            mlflow.end_run("FINISHED")
            self._ended = "FINISHED"
            if self._version:
                self._alias = alias
                self._previous = alias_version(self.client, self._registering, alias)
                self.client.set_registered_model_alias(self._registering, alias, self._version)
        except mlflow.exceptions.MlflowException as exc:
            first = first_line(exc)
            raise TrackingError(
                f"cannot record the end of run {self.run_id} in the tracking store {self.tracking_uri} ({first[:200]}); "
                "the registry and the export are left as they were: check the store and run again"
            ) from None
        self.committed = True

    def _abandon(self, status: str) -> None:
        """End an uncommitted run FAILED or KILLED and undo what it did to the registry."""
        if self._registering:
            undo_registration(self.client, self.run_id, self._registering, self._version, self._alias, self._previous)
        for key in self._commit_tags:
            with contextlib.suppress(Exception):
                self.client.delete_tag(self.run_id, key)
        if self._ended:  # the commit ended it FINISHED, then failed
            self.client.set_terminated(self.run_id, status)
        else:
            mlflow.end_run(status)
        self._ended = status


@contextmanager
def pipeline_run(tracking_uri: str, experiment: str, run_name: str) -> Iterator[PipelineRun]:
    """Open the parent run; end it FINISHED, FAILED, or KILLED (on Ctrl-C or SIGTERM).

    A block that ends normally commits the run (`PipelineRun.commit`) if it has not
    already. A block that raises before the commit ends the run FAILED (KILLED for a
    signal) and leaves the registry as it found it: the version `register` created is
    deleted and `champion` points where it did. Starting and ending the run are writes
    done whole, even if a signal arrives during them.

    Args:
        tracking_uri: The tracking URI; the store must pass `check_store`.
        experiment: Experiment name (created if new; artifacts go beside a SQLite store).
        run_name: The parent run's name.

    Yields:
        The run's logger.
    """

    # log_model works on the active run, so the fluent API must point at this store too.
    point_mlflow_at(tracking_uri)
    client = MlflowClient(for_mlflow(tracking_uri), registry_uri=for_mlflow(tracking_uri))
    tracker: PipelineRun | None = None
    status = "FAILED"
    try:
        with interrupts.held():  # a signal now is raised once the run exists, so that it ends KILLED
            run = _start_run(client, tracking_uri, experiment, run_name)
            tracker = PipelineRun(client, run.info.experiment_id, run.info.run_id, tracking_uri)
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            with interrupts.held():
                if status == "FINISHED":
                    tracker.commit()
                elif not tracker.committed:
                    tracker._abandon(status)


def _start_run(client: Any, tracking_uri: str, experiment: str, run_name: str) -> Any:
    """Start the parent run in the experiment, creating the experiment if it is new."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_root(tracking_uri))
        except mlflow.exceptions.MlflowException:
            found = client.get_experiment_by_name(experiment)  # another run created it just now
            if found is None:
                raise
            experiment_id = found.experiment_id
    elif found.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment '{experiment}' was deleted in {tracking_uri}; restore it "
            f"(mlflow experiments restore) or pass another --experiment"
        )
    else:
        experiment_id = found.experiment_id
    if found is None or EXPERIMENT_KIND_TAG not in (found.tags or {}):  # a kind the user chose stays
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name)


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float]) -> None:

    now = int(time.time() * 1000)
    entries = [Metric(k, float(v), now, 0) for k, v in metrics.items() if not math.isnan(v)]
    if entries:
        client.log_batch(run_id, metrics=entries)


def _param(value: Any) -> str:
    return str(value)[:_PARAM_MAX]


