"""Reading the user's tables as they come, and writing scored output without losing what was there."""

from __future__ import annotations

import gzip
import hashlib

import pandas as pd
import pytest

from pipeline.errors import UsageError
from pipeline.files import read_table, sha256_of, write_table


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
