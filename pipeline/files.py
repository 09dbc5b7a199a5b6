"""Reading and writing the user's tables: the data as it comes, and scored output (the export is `pipeline.exports`).

Writes go to a temporary sibling and are moved into place only when complete, so a crash
never leaves a half-written file where a person or a deployment would pick it up.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import errno
import gzip
import hashlib
import io
import lzma
import os
import stat
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from pipeline.errors import DataError, UsageError, did_you_mean

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

    As `read_hashed`, without the hash.
    """
    return read_hashed(path)[0]


def read_hashed(path: Path) -> tuple[pd.DataFrame, str]:
    """Read a data file and its SHA-256 in one pass: delimited text (plain or compressed) or Parquet.

    A text table (`.csv`, `.tsv`, `.txt`) is UTF-8 (a byte-order mark is allowed); its
    separator (`,`, `;`, tab or `|`) is detected from its first lines, and it may be gzip,
    bz2, xz or zip compressed (told by its first bytes, whatever its name). In a
    `;`-separated file, numbers with a decimal comma (`1,5`) are read as numbers (1.5).
    A file that starts with Parquet's magic bytes is read as Parquet. Every column is
    parsed whole, so a column that holds text after many numbers is text throughout.
    Parquet columns of bytes that are all UTF-8 are read as text; nested ones (lists,
    structs, maps) are kept as they are, for data understanding to leave out.

    The file is read whole once, and hashed as it is read (its first bytes are also read
    to tell its kind and separator); the hash is the file's, as `sha256_of` gives it.

    Args:
        path: The file.

    Returns:
        Its rows, and the file's SHA-256 (hex).

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
    digest = hashlib.sha256()
    if content == "parquet":
        frame = _read_parquet(path, digest)
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
        frame = _read_text(path, content, digest)
    if frame.empty:
        raise DataError(f"data file {path} has a header but no data rows; add rows")
    dupes = [str(c) for c, n in Counter(map(str, frame.columns)).items() if n > 1]
    if dupes:
        raise DataError(f"data file {path} has duplicate column names: {', '.join(dupes)}; rename them")
    return frame, digest.hexdigest()


class _Hashing(io.RawIOBase):
    """A file read front to back that feeds every byte it gives to a digest (not seekable, so nothing is read twice)."""

    def __init__(self, raw: IO[bytes], digest: Any) -> None:
        super().__init__()
        self._raw, self._digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n or 0


@contextlib.contextmanager
def _hashed(path: Path, digest: Any) -> Iterator[IO[bytes]]:
    """The file, hashed as it is read; whatever the reader left unread is hashed on close."""
    with open(path, "rb", buffering=0) as raw:
        reader = io.BufferedReader(_Hashing(raw, digest), 1 << 20)
        yield reader
        for _ in iter(lambda: reader.read(1 << 20), b""):
            pass


def _read_parquet(path: Path, digest: Any) -> pd.DataFrame:
    try:
        content = path.read_bytes()  # Parquet is read from its end (the footer) first: one read into memory
        digest.update(content)
        frame = pd.read_parquet(io.BytesIO(content))
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


def _read_text(path: Path, compression: str | None, digest: Any) -> pd.DataFrame:
    """Read a delimited text table, its separator detected from its first lines, hashing the file as it is read."""
    sample, whole = _text_sample(path, compression)
    separator, header = _separator(sample, whole)
    dupes = [c for c, n in Counter(header).items() if n > 1]
    if dupes:
        raise DataError(f"data file {path} has duplicate column names: {', '.join(dupes)}; rename them")
    try:
        # low_memory=False parses each column whole: read in chunks, a column of numbers
        # that turns to text after the first chunk would hold ints and strings mixed.
        with contextlib.ExitStack() as stack:
            if compression == "zip":  # an archive is read from its end (its directory) first: one read into memory
                content = path.read_bytes()
                digest.update(content)
                source: Any = io.BytesIO(content)
            else:  # plain or a stream (gzip, bz2, xz): hashed as pandas reads it
                source = stack.enter_context(_hashed(path, digest))
            frame = pd.read_csv(source, sep=separator, compression=compression, encoding="utf-8", low_memory=False)
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


