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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from pipeline.errors import DataError, UsageError
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
) -> Path:
    """Write the deployment folder, then move it into place in one step.

    The folder holds the MLflow model (`MLmodel`, skops file, requirements), `model.joblib`
    and `manifest.json`, which lists every other file's SHA-256. An existing folder at
    `target` is replaced only once the new one is complete.

    Args:
        target: `<out>/<experiment>/model`.
        write_mlflow_model: Writes the MLflow model into the (not yet existing) folder it is given.
        model: The fitted pipeline, for `model.joblib`.
        manifest: Provenance to write; a `files` entry with hashes is added.

    Returns:
        The target folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        folder = staging / target.name
        write_mlflow_model(folder)
        joblib.dump(model, folder / JOBLIB_MODEL)
        files = {
            str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()
        }
        (folder / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=2, default=str) + "\n")
        if target.exists():
            os.replace(target, staging / "previous")  # removed with the staging folder
        os.replace(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
