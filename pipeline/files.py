"""Reading and writing the user's files: data tables, scored output, the exported model folder.

Writes go to a temporary sibling and are moved into place only when complete, so a crash
never leaves a half-written file where a person or a deployment would pick it up.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from pipeline.errors import DataError, ModelLoadError, UsageError
from stages.deployment import sha256_of

READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": lambda p: pd.read_csv(p, encoding="utf-8"),
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}
MANIFEST = "manifest.json"
JOBLIB_MODEL = "model.joblib"


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (UTF-8) or Parquet file.

    Args:
        path: The file.

    Returns:
        Its rows.

    Raises:
        DataError: The file is missing, unreadable, of an unsupported type, empty,
            malformed, not UTF-8, or has duplicate column names.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise DataError(
            f"{path} has an unsupported extension '{path.suffix}'; use a .csv or .parquet file"
        )
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"data file {path} {what}; pass an existing file with --data")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes); pass a file with a header row and data rows")
    if suffix == ".csv":
        _check_csv_header(path)
    try:
        frame = READERS[suffix](path)
    except PermissionError:
        raise DataError(f"data file {path} cannot be read (permission denied); check its permissions") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path} is not UTF-8 (byte {exc.object[exc.start]:#x} at offset {exc.start}); "
            "re-save it as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no columns; pass a file with a header row and data rows") from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"data file {path} is not a well-formed CSV ({str(exc).strip()}); every row needs as many fields as the header"
        ) from None
    except Exception as exc:  # pyarrow and friends raise many types for a corrupt file
        raise DataError(f"data file {path} cannot be read as {suffix[1:]} ({type(exc).__name__}: {exc})") from None
    if frame.empty:
        raise DataError(f"data file {path} has a header but no data rows; add rows")
    dupes = [str(c) for c, n in Counter(map(str, frame.columns)).items() if n > 1]
    if dupes:
        raise DataError(f"data file {path} has duplicate column names: {', '.join(dupes)}; rename them")
    return frame


def _check_csv_header(path: Path) -> None:
    """pandas renames duplicate CSV headers (`a`, `a.1`) silently; catch them first."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path} is not UTF-8 (byte {exc.object[exc.start]:#x} at offset {exc.start}); re-save it as UTF-8"
        ) from None
    dupes = [c for c, n in Counter(header).items() if n > 1]
    if dupes:
        raise DataError(f"data file {path} has duplicate column names: {', '.join(dupes)}; rename them")


def write_table(frame: pd.DataFrame, path: Path, overwrite: bool) -> None:
    """Write a CSV or Parquet file atomically.

    Args:
        frame: The rows.
        path: The destination (.csv or .parquet).
        overwrite: Replace an existing file.

    Raises:
        UsageError: Unsupported extension, or the file exists and `overwrite` is False.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise UsageError(f"output {path} has an unsupported extension '{path.suffix}'; use .csv or .parquet")
    if path.exists() and not overwrite:
        raise UsageError(f"output {path} already exists; choose another --out or pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_model_dir(
    target: Path,
    write_mlflow_model: Callable[[Path], None],
    model: Any,
    manifest: dict[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write the deployment folder, then move it into place in one step.

    The folder holds the MLflow model (`MLmodel`, skops file, requirements), `model.joblib`,
    any extra files (the model card, plots) and `manifest.json`, which lists every other
    file's SHA-256. An existing folder at `target` is replaced only once the new one is complete.

    Args:
        target: `<out>/<experiment>/model`.
        write_mlflow_model: Writes the MLflow model into the (not yet existing) folder it is given.
        model: The fitted pipeline, for `model.joblib`.
        manifest: Provenance to write; a `files` entry with hashes is added.
        extra_files: `{relative path: content}` written into the folder, e.g.
            `{"model_card.md": ..., "plots/roc_curve.png": ...}`.

    Returns:
        The target folder.

    Raises:
        ValueError: An extra file's path is absolute or leaves the folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        folder = staging / target.name
        write_mlflow_model(folder)
        joblib.dump(model, folder / JOBLIB_MODEL)
        for name, content in (extra_files or {}).items():
            path = folder / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"extra file {name!r} must be a relative path inside the model folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        files = {
            str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()
        }
        (folder / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=2, default=str) + "\n")
        previous = staging / "previous"  # removed with the staging folder once the new one is in place
        if target.exists():
            os.replace(target, previous)
        try:
            os.replace(folder, target)
        except BaseException:  # even Ctrl-C between the two moves: put the old model back
            if previous.exists() and not target.exists():
                os.replace(previous, target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def verify_export(folder: Path) -> dict[str, Any]:
    """Check an exported model folder against its `manifest.json` before anything in it is loaded.

    Every file the manifest lists must be there with the same SHA-256, and no other file
    may be. This catches a partial copy, a corrupted file, or a file swapped in after
    export (such as a different `model.joblib` pickle). It cannot catch someone who also
    rewrote the manifest: for that, protect the folder, or load from the MLflow registry.

    Args:
        folder: The model folder (`<out>/<experiment>/model`).

    Returns:
        The manifest.

    Raises:
        ModelLoadError: The manifest is missing or unreadable, or a file is missing, changed or unexpected.
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
    listed = manifest.get("files") if isinstance(manifest, dict) else None
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
    present = (str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    extra = sorted(name for name in present if name != MANIFEST and name not in listed)
    if extra:
        raise ModelLoadError(
            f"{folder} holds {', '.join(extra)}, which its {MANIFEST} does not list: it changed after export, so it is not loaded; "
            "remove the file or re-export the model"
        )
    return manifest
