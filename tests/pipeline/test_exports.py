"""The exported folder on its own: written, sealed, verified, and refused once edited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ModelLoadError
from pipeline.exports import MANIFEST, STAGING_MARKER, export_model_dir, remove_stale_staging, verify_export


def _write_mlflow_model(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")


def _export(tmp_path: Path, seed: int = 0) -> Path:
    target = tmp_path / "models" / "exp" / "model"
    return export_model_dir(target, _write_mlflow_model, {"a": 1}, {"seed": seed}, {"model_card.md": b"# card\n"})


def test_an_export_verifies_and_lists_every_file_with_its_hash(tmp_path):
    folder = _export(tmp_path)
    manifest = verify_export(folder)
    assert manifest["seed"] == 0 and set(manifest["files"]) >= {"MLmodel", "model.joblib", "model_card.md"}
    assert not [p for p in folder.parent.iterdir() if p.name != "model"]  # no staging folder is left


@pytest.mark.parametrize("edit", ["a file", "a manifest field outside the hash list"])
def test_an_edited_export_is_refused(tmp_path, edit):
    folder = _export(tmp_path)
    if edit == "a file":
        (folder / "model_card.md").write_bytes(b"# edited\n")
    else:
        manifest = json.loads((folder / MANIFEST).read_text())
        (folder / MANIFEST).write_text(json.dumps({**manifest, "seed": 7}))
    with pytest.raises(ModelLoadError):
        verify_export(folder)


def test_a_second_export_replaces_the_first(tmp_path):
    _export(tmp_path, seed=0)
    folder = _export(tmp_path, seed=1)
    assert verify_export(folder)["seed"] == 1


def test_only_a_stale_staging_folder_of_crispml_is_removed(tmp_path):
    target = _export(tmp_path)
    stale = target.parent / ".model.abc.tmp"
    stale.mkdir()
    (stale / STAGING_MARKER).write_text("")
    theirs = target.parent / ".model.user.tmp"  # no marker: not crispml's
    theirs.mkdir()
    removed = remove_stale_staging(target)
    assert removed == [stale] and not stale.exists() and theirs.exists()
