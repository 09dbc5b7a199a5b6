"""Reading the user's tables as they come, and writing scored output without losing what was there."""

from __future__ import annotations

import builtins
import bz2
import gzip
import hashlib
import zipfile

import pandas as pd
import pytest

from pipeline import files
from pipeline.errors import UsageError
from pipeline.files import read_hashed, read_table, sha256_of, write_table


@pytest.mark.parametrize("separator", [",", ";", "\t", "|"])
def test_the_separator_is_detected(tmp_path, separator):
    path = tmp_path / "t.csv"
    path.write_text(separator.join(["a", "b", "label"]) + "\n" + "\n".join(separator.join(["1", "x", "yes"]) for _ in range(5)) + "\n")
    assert list(read_table(path).columns) == ["a", "b", "label"]


def test_gzip_content_is_read_whatever_the_name_says(tmp_path):
    path = tmp_path / "t.csv"  # gzip inside, .csv outside
    path.write_bytes(gzip.compress(b"a,b\n1,2\n3,4\n"))
    assert read_table(path).to_dict("list") == {"a": [1, 3], "b": [2, 4]}


def test_scored_output_does_not_replace_a_file_unless_asked(tmp_path):
    out = tmp_path / "scored.csv"
    out.write_text("mine\n")
    frame = pd.DataFrame({"x": [1]})
    with pytest.raises(UsageError):
        write_table(frame, out, overwrite=False)
    assert out.read_text() == "mine\n"
    write_table(frame, out, overwrite=True)
    assert read_table(out).to_dict("list") == {"x": [1]}


def test_sha256_of_is_the_files_digest(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20))  # several chunks
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def _written(tmp_path, kind: str):
    frame = pd.DataFrame({"x": range(30000), "label": ["yes", "no", "maybe"] * 10000})  # a few times the sniffed 64 KiB
    plain = frame.to_csv(index=False).encode()
    path = tmp_path / {"csv": "t.csv", "gzip": "t.csv.gz", "bz2": "t.csv.bz2", "zip": "t.csv.zip", "parquet": "t.parquet"}[kind]
    if kind == "parquet":
        frame.to_parquet(path)
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("t.csv", plain)
    else:
        path.write_bytes({"csv": lambda b: b, "gzip": gzip.compress, "bz2": bz2.compress}[kind](plain))
    return frame, path


@pytest.mark.parametrize("kind", ["csv", "gzip", "bz2", "zip", "parquet"])
def test_a_data_file_is_read_once_and_hashed_as_it_is_read(tmp_path, monkeypatch, kind):
    frame, path = _written(tmp_path, kind)
    read = []  # bytes read from the data file, by every handle opened on it

    class Counting:
        def __init__(self, handle):
            self._handle = handle

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

        def read(self, *args):
            data = self._handle.read(*args)
            read.append(len(data))
            return data

        def readinto(self, buffer):
            n = self._handle.readinto(buffer)
            read.append(n or 0)
            return n

    def counting_open(file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return Counting(handle) if str(file) == str(path) and "b" in mode else handle

    monkeypatch.setattr(files, "open", counting_open, raising=False)
    monkeypatch.setattr(type(path), "read_bytes", lambda self: (read.append(self.stat().st_size), builtins.open(self, "rb").read())[1])
    got, digest = read_hashed(path)
    total, size = sum(read), path.stat().st_size
    monkeypatch.undo()
    assert digest == sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    pd.testing.assert_frame_equal(got, frame, check_dtype=False)
    # The whole file once, and its first bytes again to tell its kind and separator (one 64 KiB chunk).
    assert size <= total <= size + 8 + (1 << 16)
