"""Reading and writing the user's files: data tables, scored output, the exported model folder.

Writes go to a temporary sibling and are moved into place only when complete, so a crash
never leaves a half-written file where a person or a deployment would pick it up.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import errno
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import joblib
import pandas as pd

from pipeline import interrupts, paths
from pipeline.errors import ConfigError, DataError, ModelLoadError, UsageError, did_you_mean

try:
    import fcntl
except ImportError:  # Windows: staging folders are not locked, and none is removed as stale
    fcntl = None  # type: ignore[assignment]

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
"""Delimited text tables; the separator is detected (`SEPARATORS`), whatever the suffix says."""
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip"}
"""A text table may be compressed (`t.csv.gz`); the content's magic bytes decide, not the name."""
OUTPUT_SUFFIXES = (".csv", ".parquet", ".pq")
SEPARATORS = ",;\t|"
"""The separators a text table may use: comma, semicolon, tab, pipe."""
_MAGIC = (
    (b"PAR1", "parquet"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip archive
    (b"(\xb5/\xfd", "zstd"),
)
_SNIFF_LINES = 20
_SNIFF_CHUNK = 1 << 16
_SNIFF_MAX_BYTES = 1 << 24  # a header this long is not a table crispml can use anyway
_DECIMAL_COMMA = r"\s*[+-]?(?:[0-9]+|[0-9]{1,3}(?:\.[0-9]{3})+),[0-9]+\s*"
"""A number written with a decimal comma (`1,5`, `-0,25`, `1.234,5`), as in a `;`-separated file."""
_SEPARATOR_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
MANIFEST = "manifest.json"
JOBLIB_MODEL = "model.joblib"


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in chunks.

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_problem(path: Path, flag: str) -> str:
    """Why `path` cannot be read as a regular file, with the fix; "" when it can.

    Nothing is opened: a named pipe (which would block) or a device such as `/dev/zero`
    (which never ends) is told apart by its type alone.

    Args:
        path: The file named by the user.
        flag: The option that named it (`--data`, `--config`), for the fix.

    Returns:
        The rest of a message that starts with the file's name, e.g.
        `"is a folder, not a file; pass an existing file with --data"`, or "".
    """
    path = Path(path)
    again = f"pass an existing file with {flag}"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist; {again}"
        parent = path.parent
        near = did_you_mean(path.name, os.listdir(parent)) if parent.is_dir() and os.access(parent, os.R_OK) else ""
        return f"does not exist{near}; {again}"
    except NotADirectoryError:
        above = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        return f"does not exist: {above} is a file, not a folder; {again}"
    except PermissionError:
        return f"cannot be reached (permission denied on a folder above it); check the folders' permissions or {again}"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"is a symbolic link loop (it leads back to itself); {again}"
        return f"cannot be reached ({exc.strerror or exc}); {again}"
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            return "cannot be read (permission denied); check its permissions"
        return ""
    kinds = {
        stat.S_ISDIR: "a folder, not a file",
        stat.S_ISFIFO: "a named pipe (FIFO), not a regular file",
        stat.S_ISCHR: "a character device, not a regular file",
        stat.S_ISBLK: "a block device, not a regular file",
        stat.S_ISSOCK: "a socket, not a regular file",
    }
    kind = next((k for test, k in kinds.items() if test(mode)), "not a regular file")
    if "folder" in kind:
        return f"is {kind}; {again}"
    return f"is {kind}; save what it holds to a file and pass that with {flag}"


def read_table(path: Path) -> pd.DataFrame:
    """Read a data file: delimited text (plain or compressed) or Parquet, every column with one type.

    A text table (`.csv`, `.tsv`, `.txt`) is UTF-8 (a byte-order mark is allowed); its
    separator (`,`, `;`, tab or `|`) is detected from its first lines, and it may be gzip,
    bz2, xz or zip compressed (told by its first bytes, whatever its name). In a
    `;`-separated file, numbers with a decimal comma (`1,5`) are read as numbers (1.5).
    A file that starts with Parquet's magic bytes is read as Parquet. Every column is
    parsed whole, so a column that holds text after many numbers is text throughout.
    Parquet columns of bytes that are all UTF-8 are read as text; nested ones (lists,
    structs, maps) are kept as they are, for data understanding to leave out.

    Args:
        path: The file.

    Returns:
        Its rows.

    Raises:
        DataError: The file is missing, not a regular file, unreadable, of an unsupported
            type, empty, compressed but damaged, malformed, not UTF-8, or has duplicate
            column names.
    """
    path = Path(path)
    problem = file_problem(path, "--data")  # first: a pipe or a device is named as such, whatever its name
    if problem:
        raise DataError(f"data file {path} {problem}")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compressed_name = len(suffixes) == 2 and suffixes[-1] in COMPRESSED_SUFFIXES and suffixes[0] in TEXT_SUFFIXES
    if not compressed_name and path.suffix.lower() not in (*TEXT_SUFFIXES, *PARQUET_SUFFIXES):
        raise DataError(
            f"{path} has an unsupported extension '{path.suffix}'; use a .csv or .parquet file "
            "(also read: .tsv, .txt, and .csv.gz, .csv.bz2, .csv.xz, .csv.zip)"
        )
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes); pass a file with a header row and data rows")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except PermissionError:
        raise DataError(f"data file {path} cannot be read (permission denied); check its permissions") from None
    content = next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)
    if content == "parquet":
        frame = _read_parquet(path)
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        seems = f"it is {content}-compressed" if content else "it looks like text" if _looks_like_text(head) else ""
        raise DataError(
            f"data file {path} cannot be read as parquet: it does not start with Parquet's magic bytes PAR1"
            f"{f' ({seems})' if seems else ''}; pass a Parquet file, or name a CSV file .csv"
        )
    elif content == "zstd":
        raise DataError(
            f"data file {path} is zstd-compressed, which crispml does not read; decompress it (zstd -d) "
            "or compress it with gzip, bz2, xz or zip"
        )
    else:
        frame = _read_text(path, content)
    if frame.empty:
        raise DataError(f"data file {path} has a header but no data rows; add rows")
    dupes = [str(c) for c, n in Counter(map(str, frame.columns)).items() if n > 1]
    if dupes:
        raise DataError(f"data file {path} has duplicate column names: {', '.join(dupes)}; rename them")
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except PermissionError:
        raise DataError(f"data file {path} cannot be read (permission denied); check its permissions") from None
    except Exception as exc:  # pyarrow and friends raise many types for a corrupt file
        raise DataError(f"data file {path} cannot be read as parquet ({type(exc).__name__}: {exc})") from None
    return bytes_as_text(frame)


def bytes_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame, each column whose values are all bytes in UTF-8 read as text (in place)."""
    for name in frame.columns:
        if frame[name].dtype == object:
            text = _utf8_text(frame[name])
            if text is not None:
                frame[name] = text
    return frame


def _utf8_text(col: pd.Series) -> pd.Series | None:
    """A column of bytes as text, when every value is bytes in UTF-8; else None."""
    present = col.dropna()
    if present.empty or not present.map(lambda v: isinstance(v, (bytes, bytearray))).all():
        return None
    try:
        return col.map(lambda v: bytes(v).decode("utf-8"), na_action="ignore").astype("str")
    except UnicodeDecodeError:
        return None  # binary data: data understanding leaves it out


def _looks_like_text(head: bytes) -> bool:
    return all(32 <= b < 127 or b in b"\t\r\n" for b in head)


def _read_text(path: Path, compression: str | None) -> pd.DataFrame:
    """Read a delimited text table, its separator detected from its first lines."""
    sample, whole = _text_sample(path, compression)
    separator, header = _separator(sample, whole)
    dupes = [c for c, n in Counter(header).items() if n > 1]
    if dupes:
        raise DataError(f"data file {path} has duplicate column names: {', '.join(dupes)}; rename them")
    try:
        # low_memory=False parses each column whole: read in chunks, a column of numbers
        # that turns to text after the first chunk would hold ints and strings mixed.
        frame = pd.read_csv(path, sep=separator, compression=compression, encoding="utf-8", low_memory=False)
    except PermissionError:
        raise DataError(f"data file {path} cannot be read (permission denied); check its permissions") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path} is not UTF-8 (byte {exc.object[exc.start]:#x} at offset {exc.start}); re-save it as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no columns; pass a file with a header row and data rows") from None
    except pd.errors.ParserError as exc:
        used = f"; it seems to use {_SEPARATOR_NAMES[separator]} as its separator" if separator != "," else ""
        raise DataError(
            f"data file {path} is not a well-formed CSV ({str(exc).strip()}){used}; "
            "every row needs as many fields as the header"
        ) from None
    except Exception as exc:  # a compressed stream that breaks off, and other damage
        raise DataError(_unreadable(path, compression, exc)) from None
    if separator == ";":
        frame = _decimal_commas(frame)
    return frame


def _unreadable(path: Path, compression: str | None, exc: BaseException) -> str:
    why = f"{type(exc).__name__}: {exc}"
    if compression:
        return (
            f"data file {path} is {compression}-compressed but cannot be decompressed ({why}); "
            "the file is damaged or cut short: compress it again, or pass the plain CSV"
        )
    return f"data file {path} cannot be read as CSV ({why})"


def _text_sample(path: Path, compression: str | None) -> tuple[str, bool]:
    """The first whole lines of a (possibly compressed) text file, decoded, and whether that is all of it."""
    raw, whole = b"", False
    try:
        with _open_decompressed(path, compression) as fh:
            while raw.count(b"\n") <= _SNIFF_LINES and len(raw) < _SNIFF_MAX_BYTES:
                chunk = fh.read(_SNIFF_CHUNK)
                if not chunk:
                    whole = True
                    break
                raw += chunk
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"data file {path} cannot be read (permission denied); check its permissions") from None
    except Exception as exc:  # gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile ...
        raise DataError(_unreadable(path, compression, exc)) from None
    if not whole and b"\n" in raw:
        raw = raw[: raw.rfind(b"\n") + 1]
    decoder = codecs.getincrementaldecoder("utf-8-sig")()  # strips a byte-order mark
    try:
        return decoder.decode(raw, final=whole), whole  # a character cut at the sample's end is not an error
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path} is not UTF-8 (byte {exc.object[exc.start]:#x} at offset {exc.start}); re-save it as UTF-8"
        ) from None


@contextlib.contextmanager
def _open_decompressed(path: Path, compression: str | None) -> Iterator[IO[bytes]]:
    if compression == "zip":
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            if len(members) != 1:  # as pandas reads it
                raise DataError(
                    f"data file {path} is a zip archive of {len(members)} files; crispml reads a zip of exactly one "
                    "CSV file: extract the one you mean, or zip it alone"
                )
            with archive.open(members[0]) as fh:
                yield fh
        return
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression or "", open)
    with opener(path, "rb") as fh:
        yield fh


def _separator(sample: str, whole: bool) -> tuple[str, list[str]]:
    """The separator of a text table and its header's fields, from its first lines.

    A separator that splits the header and every sampled row into the same number of
    fields (more than one) is taken, the comma first; among several others, `csv.Sniffer`
    decides. When none does (one column, ragged rows), `csv.Sniffer` guesses, and failing
    that the separator the header holds most often is taken (a comma when it holds none).
    """
    records = {s: list(csv.reader(io.StringIO(sample), delimiter=s)) for s in SEPARATORS}
    if not whole:  # a quoted field running past the sample cuts its record short
        records = {s: r[:-1] if len(r) > 1 else r for s, r in records.items()}
    header = sample.splitlines()[0] if sample else ""
    consistent = [s for s, r in records.items() if r and len(r[0]) > 1 and len({len(f) for f in r}) == 1]
    if "," in consistent or len(consistent) == 1:
        separator = consistent[0]
    else:
        separator = _sniffed(sample, "".join(consistent) or SEPARATORS)
        if not separator or separator not in header:  # it can settle on a character only the rows hold
            counts = {s: header.count(s) for s in SEPARATORS}
            separator = max(SEPARATORS, key=counts.__getitem__) if any(counts.values()) else ","
    return separator, records[separator][0] if records[separator] else []


def _sniffed(sample: str, candidates: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=candidates).delimiter
    except csv.Error:
        return ""


def _decimal_commas(frame: pd.DataFrame) -> pd.DataFrame:
    """In a `;`-separated file, read numbers written with a decimal comma as numbers.

    Only cells that are such a number change (`1,5` to 1.5, `1.234,5` to 1234.5); a column
    that then holds only numbers becomes numeric, others stay text for the data step.
    """
    for name in frame.columns:
        col = frame[name]
        if not isinstance(col.dtype, pd.StringDtype):
            continue  # read with low_memory=False, a column with any text is text throughout
        comma = col.str.fullmatch(_DECIMAL_COMMA).fillna(False).to_numpy(dtype=bool)
        if not comma.any():
            continue
        fixed = col.str.strip().str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
        col = col.where(~comma, fixed)
        numbers = pd.to_numeric(col, errors="coerce")
        frame[name] = numbers if not (numbers.isna() & col.notna()).any() else col
    return frame


def check_scored_output(path: Path, overwrite: bool) -> None:
    """Fail before any work when the scored rows could not be written to `path`.

    The file's folder is made if it is missing (as `crispml run --out` makes its folder),
    but only when the rows are written.

    Args:
        path: `--out` of `crispml predict`.
        overwrite: An existing file may be replaced.

    Raises:
        UsageError: Unsupported extension; `path` is a folder or not a regular file; it
            exists and `overwrite` is False; or a part of the path above it is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; name a file in it, such as {path / 'scored.csv'}")
    if path.exists() and not path.is_file():
        raise UsageError(
            f"--out {path} is not a regular file (a device, pipe or socket), which crispml will not replace; "
            "name a .csv or .parquet file"
        )
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"output {path} has an unsupported extension '{path.suffix}'; use .csv or .parquet")
    if path.exists() and not overwrite:
        raise UsageError(f"output {path} already exists; choose another --out or pass --overwrite to replace it")
    for above in path.parents:
        if above.is_dir():
            if not os.access(above, os.W_OK | os.X_OK):
                raise UsageError(f"--out {path} cannot be written: {above} is not writable; choose another --out")
            break
        if above.exists() or above.is_symlink():
            kind = "a broken symbolic link" if not above.exists() else "a file, not a folder"
            raise UsageError(f"--out {path} lies under {above}, which is {kind}; choose another --out")


def write_table(frame: pd.DataFrame, path: Path, overwrite: bool) -> None:
    """Write a CSV or Parquet file atomically, making its folder if it is missing.

    For Parquet, a column of Python objects that Arrow cannot store as one type (numbers
    and text mixed, say) is written as text.

    Args:
        frame: The rows.
        path: The destination (.csv or .parquet).
        overwrite: Replace an existing file.

    Raises:
        UsageError: `check_scored_output` refuses the path, or the file cannot be written.
    """
    path = Path(path)
    check_scored_output(path, overwrite)
    made = [p for p in reversed(path.parents) if not p.exists()]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            _storable(frame).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"--out {path} cannot be written ({exc.strerror or exc}); choose another --out") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not path.exists():
            for folder in reversed(made):  # nothing written: leave no folder behind either
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every object column that Arrow cannot store as one type made text."""
    import pyarrow as pa

    out = frame
    for name in frame.columns:
        col = frame[name]
        if col.dtype != object:
            continue
        try:
            pa.array(col, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            if out is frame:
                out = frame.copy(deep=False)
            out[name] = col.map(str, na_action="ignore").astype("str")
    return out


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
