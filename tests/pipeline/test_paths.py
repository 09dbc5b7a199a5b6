"""Where `crispml run` writes (`pipeline.paths`): inside the folder named, checked before training, nothing left behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.errors import ConfigError


def test_a_path_inside_the_root_is_returned_as_given_and_one_outside_is_refused(tmp_path):
    assert paths.inside(tmp_path, tmp_path / "a" / "b", "the export") == tmp_path / "a" / "b"
    relative = Path("models") / "x"
    assert paths.inside(Path("models"), relative, "the export") == relative  # unchanged, not resolved
    with pytest.raises(ConfigError, match=r"the export, .*, resolves to .*, outside"):
        paths.inside(tmp_path / "out", tmp_path / "out" / ".." / "elsewhere", "the export")


def test_the_export_folder_is_out_experiment_model():
    assert paths.export_target(Path("models"), "churn") == Path("models") / "churn" / paths.MODEL_FOLDER
    assert paths.MODEL_FOLDER == "model" and paths.EXPORT_MARKER == "manifest.json"


def test_checking_the_export_target_makes_nothing_that_stays(tmp_path):
    out = tmp_path / "new" / "models"
    assert paths.check_export_target(out, "churn") == out / "churn" / "model"
    assert list(tmp_path.iterdir()) == []  # the folders made to prove it can be written are gone again


def test_an_existing_out_and_experiment_folder_are_kept(tmp_path):
    (tmp_path / "churn" / "notes").mkdir(parents=True)
    paths.check_export_target(tmp_path, "churn")
    assert [p.name for p in (tmp_path / "churn").iterdir()] == ["notes"]


@pytest.mark.parametrize(
    ("file", "out", "words"),
    [
        ("out", "out", "--out {out} is a file, not a folder"),
        ("up", "up/out", "--out {out} lies under {file}, which is a file, not a folder"),
        ("out/churn", "out", "{file}, the folder of experiment 'churn' under --out {out}, is a file, not a folder"),
    ],
    ids=["out", "a parent of out", "the experiment's folder"],
)
def test_a_file_in_the_way_of_the_export_is_named_and_left_alone(tmp_path, file, out, words):
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("mine\n")
    message = words.format(out=tmp_path / out, file=tmp_path / file)
    with pytest.raises(ConfigError, match=re.escape(message)):
        paths.check_export_target(tmp_path / out, "churn")
    assert (tmp_path / file).read_text() == "mine\n"


@pytest.mark.parametrize(("kind", "make"), [("a file, not a folder", "file"), ("a symbolic link", "link")])
def test_a_file_or_a_link_where_the_model_goes_is_not_replaced(tmp_path, kind, make):
    target = tmp_path / "model"
    if make == "file":
        target.write_text("mine\n")
    else:
        (tmp_path / "theirs").mkdir()
        target.symlink_to(tmp_path / "theirs")
    with pytest.raises(ConfigError, match=f"where the model is exported, is {kind}"):
        paths.check_replaceable(target)
    assert target.is_symlink() or target.read_text() == "mine\n"
