"""The exported model folder: written beside the old one, swapped in atomically, sealed, and checked before use.

`export_model_dir` stages the new folder next to the old (`.crispml-staging`), writes the
model, its manifest and card, lets the caller register the version, then swaps the folders
and commits; a failure or a signal puts the old folder back. `verify_export` checks a folder
against its sealed manifest (every file's SHA-256, and the manifest as a whole) before
anything in it is loaded; `remove_stale_staging` clears what a killed run left.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import joblib

from pipeline import interrupts, paths
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.files import sha256_of

try:
    import fcntl
except ImportError:  # Windows: staging folders are not locked, and none is removed as stale
    fcntl = None  # type: ignore[assignment]



MANIFEST = "manifest.json"
JOBLIB_MODEL = "model.joblib"


def export_model_dir(
    target: Path,
    write_mlflow_model: Callable[[Path], None],
    model: Any,
    manifest: dict[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
    *,
    register: Callable[[], Mapping[str, Any]] | None = None,
    commit: Callable[[], None] | None = None,
) -> Path:
    """Write the deployment folder beside the old one, then move it into place in one step.

    The folder holds the MLflow model (`MLmodel`, skops file, requirements), `model.joblib`,
    any extra files (the model card, plots) and `manifest.json`, which lists every other
    file's SHA-256. It is written in a staging folder `<out>/<experiment>/.model.<random>.tmp`
    that holds a `.crispml-staging` marker file, locked (`fcntl.flock`) for as long as the
    export runs. The old folder at `target` stays until the new one is in place and `commit`
    has succeeded; if either fails, or a signal arrives, the old folder is put back. Staging
    folders that a killed export left behind (marker present, lock free) are removed first;
    one that still holds the old folder while `target` is missing gives it back.

    Args:
        target: `<out>/<experiment>/model`.
        write_mlflow_model: Writes the MLflow model into the (not yet existing) folder it is given.
        model: The fitted pipeline, for `model.joblib`.
        manifest: Provenance to write; a `files` entry with hashes is added.
        extra_files: `{relative path: content}` written into the folder, e.g.
            `{"model_card.md": ..., "plots/roc_curve.png": ...}`.
        register: Called once every file but the manifest is written; returns entries that
            update the manifest's top level (the registry version it created, say).
        commit: Called once the new folder is in place, as the export's last step (moving the
            registry's alias, say); if it raises, the old folder is put back.

    Returns:
        The target folder.

    Raises:
        ValueError: An extra file's path is absolute or leaves the folder.
        ConfigError: A file cannot be written (no space left, no permission).
    """
    target = Path(target)
    try:
        _export(target, write_mlflow_model, model, manifest, extra_files or {}, register, commit)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the model export {target} ({exc.strerror or exc}); the previous export, if any, is "
            f"left in place: free some space or fix the permissions under {target.parent}, or pass another --out"
        ) from None
    return target


def _export(
    target: Path,
    write_mlflow_model: Callable[[Path], None],
    model: Any,
    manifest: dict[str, Any],
    extra_files: Mapping[str, bytes],
    register: Callable[[], Mapping[str, Any]] | None,
    commit: Callable[[], None] | None,
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging, lock = None, None
    try:
        with interrupts.held():  # a signal while the folder is made still finds it named, and removes it
            staging, lock = _staging_folder(target)
        folder = staging / target.name
        write_mlflow_model(folder)
        for cache in list(folder.rglob("__pycache__")):  # MLflow's own checks of the model may leave bytecode behind
            shutil.rmtree(cache, ignore_errors=True)
        joblib.dump(model, folder / JOBLIB_MODEL)
        for name, content in extra_files.items():
            path = folder / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"extra file {name!r} must be a relative path inside the model folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        files = {
            str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()
        }
        manifest = {**manifest, **(register() if register is not None else {})}
        (folder / MANIFEST).write_text(sealed_manifest({**manifest, "files": files}), encoding="utf-8")
        _swap(folder, target, staging / _PREVIOUS, commit)
    finally:
        with interrupts.held():  # a signal during the clean-up waits for its end
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if lock is not None:
                lock.close()


def is_bytecode_cache(relative: Path) -> bool:
    """A file in a `__pycache__` folder of a model folder: Python writes one when it imports the
    model's shipped loader (`code/crispml_pyfunc.py`), as plain `mlflow.pyfunc.load_model` does.
    The file checks skip these, and crispml loads a model from a copy without them."""
    return "__pycache__" in Path(relative).parts


STAGING_MARKER = ".crispml-staging"
"""The file that marks a staging folder as crispml's; its lock is held while the export runs."""
_PREVIOUS = "previous"  # the old model folder, inside the staging folder, until the new one is committed


def _swap(folder: Path, target: Path, previous: Path, commit: Callable[[], None] | None) -> None:
    """Move `folder` to `target` (the old one aside to `previous`) and commit; on any failure put the old one back.

    A signal is held until the swap and the commit are done or undone: they are one step.
    Between processes too: the experiment's folder is locked for them, so two runs of one
    experiment swap and commit one after the other, and the export in place and the
    registry's `champion` name the same run.
    """
    with interrupts.held(), _locked(target.parent):
        paths.check_replaceable(target)  # never a folder the user made, even one made during the run
        if target.exists():
            os.replace(target, previous)
        moved_in = False
        try:
            os.replace(folder, target)
            moved_in = True
            interrupts.check()  # a signal during the moves: undo them rather than commit
            if commit is not None:
                commit()
        except BaseException:  # a failed commit, even Ctrl-C between the two moves: put the old model back
            if moved_in:
                os.replace(target, previous.with_name("abandoned"))
            if previous.exists() and not target.exists():
                os.replace(previous, target)
            raise


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive `fcntl.flock` on a folder for the block (no lock without `fcntl`)."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _staging_folder(target: Path) -> tuple[Path, Any]:
    """A new staging folder beside `target`, with its marker file locked; returns it and the lock's file."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    handle = None
    try:
        unnamed = staging / f"{STAGING_MARKER}.new"
        handle = open(unnamed, "w", encoding="utf-8")  # noqa: SIM115 (held open until the export ends)
        handle.write(f"crispml is exporting {target} here (process {os.getpid()}); removed when it ends\n")
        handle.flush()
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        unnamed.rename(staging / STAGING_MARKER)  # the marker appears already locked
    except BaseException:  # the folder is not the caller's yet: remove it here
        if handle is not None:
            handle.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, handle


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders beside `target` that a killed export left behind.

    Only crispml's own are touched: a folder named `.<target name>.*.tmp` (not a link) that
    holds a `.crispml-staging` marker file whose lock no live process holds. If such a folder
    still holds the old model folder and `target` is missing (the export was killed between
    its two moves), the old folder is moved back to `target` first. Without `fcntl`
    (Windows) nothing is removed.

    Args:
        target: `<out>/<experiment>/model`.

    Returns:
        The folders removed.
    """
    removed: list[Path] = []
    if fcntl is None:
        return removed
    for staging in sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp")):
        marker = staging / STAGING_MARKER
        if staging.is_symlink() or not staging.is_dir() or marker.is_symlink() or not marker.is_file():
            continue
        try:
            handle = open(marker, encoding="utf-8")  # noqa: SIM115
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live export holds it
                continue
            previous = staging / _PREVIOUS
            if not target.exists() and (previous / MANIFEST).is_file():
                os.replace(previous, target)
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


MANIFEST_SEAL = "manifest_sha256"
"""The `manifest.json` field that holds the SHA-256 of the canonical JSON of every other field."""


def sealed_manifest(manifest: Mapping[str, Any]) -> str:
    """The text of `manifest.json`: the manifest with a `manifest_sha256` over all its other fields.

    The seal is the SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of the
    manifest as it reads back from the file, so `verify_export` can recompute it. An old
    seal in `manifest` is replaced.

    Args:
        manifest: The provenance to write, with its `files` hashes; values JSON cannot hold
            are written as strings.

    Returns:
        The indented JSON text, ending in a newline.
    """
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != MANIFEST_SEAL}, default=str))
    return json.dumps({**body, MANIFEST_SEAL: _manifest_digest(body)}, indent=2) + "\n"


def _manifest_digest(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def verify_export(folder: Path) -> dict[str, Any]:
    """Check an exported model folder against its `manifest.json` before anything in it is loaded.

    The manifest's own fields (the seed, the data's hash, the decision, ...) must match its
    `manifest_sha256`; every file it lists must be there with the same SHA-256, and no other
    file may be. This catches a partial copy, a corrupted file, a hand-edited manifest, or a
    file swapped in after export (such as a different `model.joblib` pickle). It cannot
    catch someone who rewrote the manifest and recomputed its seal: for that, protect the
    folder, or load from the MLflow registry, whose files are checked against hashes kept
    in the tracking database.

    Args:
        folder: The model folder (`<out>/<experiment>/model`).

    Returns:
        The manifest.

    Raises:
        ModelLoadError: The manifest is missing, unreadable, unsealed or edited, or a file is
            missing, changed or unexpected.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    fix = "re-export the model with 'crispml run', or copy the whole folder again"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(
            f"{folder} has no {MANIFEST}, so its files cannot be checked before loading; "
            f"it is not a complete crispml export: {fix}"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} cannot be read ({exc}); {fix}") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path} holds a JSON {type(manifest).__name__}, not an object; {fix}")
    seal = manifest.get(MANIFEST_SEAL)
    if not isinstance(seal, str):
        raise ModelLoadError(
            f"{path} has no {MANIFEST_SEAL}, so its fields cannot be checked (an export by an older "
            f"crispml, or the seal was removed): {fix}"
        )
    if _manifest_digest({k: v for k, v in manifest.items() if k != MANIFEST_SEAL}) != seal:
        raise ModelLoadError(
            f"{path} does not match its {MANIFEST_SEAL}: a field of it was edited after export, so the model is not loaded; {fix}"
        )
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise ModelLoadError(f"{path} lists no file hashes; {fix}")
    for name, expected in sorted(listed.items()):
        file = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not file.is_file():
            raise ModelLoadError(f"{folder} is missing {name}, which its {MANIFEST} lists; {fix}")
        if sha256_of(file) != expected:
            raise ModelLoadError(
                f"{file} does not match the SHA-256 in {MANIFEST}: it changed after export, so it is not loaded; {fix}"
            )
    present = (str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not is_bytecode_cache(p.relative_to(folder)))
    extra = sorted(name for name in present if name != MANIFEST and name not in listed)
    if extra:
        raise ModelLoadError(
            f"{folder} holds {', '.join(extra)}, which its {MANIFEST} does not list: it changed after export, so it is not loaded; "
            "remove the file or re-export the model"
        )
    return manifest
