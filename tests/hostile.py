"""The harness of the hostile-input catalogue (`tests/pipeline/test_hostile_*.py`).

A hostile case is a command line run in a fresh working folder, `<tmp>/work`, beside a
folder the user did not name, `<tmp>/outside`, which holds files and a `model/` folder
of its own. The case checks the exit code, that stderr ends in one `crispml: error:`
line holding the case's words (with nothing before it but progress and warnings), that
no traceback was printed, and that nothing under `<tmp>` was created, changed or removed
except under the folders the command line named for writing (by default the store,
`mlruns/`, and the export folder, `models/`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import EXIT_USAGE

Setup = Callable[[Path], None]

RUN = ("run", "--models", "baseline,linear", "--folds", "3", "--n-jobs", "1")
"""The cheapest real training run."""


def labelled(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small binary task with a clear signal: numeric, categorical, missing cells."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "x1": x1,
            "x2": rng.uniform(0, 10, size=n),
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "label": np.where(x1 > 0, "yes", "no"),
        }
    )
    frame.loc[[3, 9], "x2"] = np.nan
    return frame


def csv(name: str, frame: pd.DataFrame) -> Setup:
    """Write `frame` as a CSV file `name` in the working folder."""
    return lambda work: frame.to_csv(work / name, index=False)


def raw(name: str, content: bytes | str) -> Setup:
    """Write bytes (or UTF-8 text) as the file `name` in the working folder, making its parents."""

    def run(work: Path) -> None:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)

    return run


def both(*setups: Setup) -> Setup:
    """Run several setups in order."""

    def run(work: Path) -> None:
        for setup in setups:
            setup(work)

    return run


@dataclass(frozen=True)
class Hostile:
    """One hostile input: files to make, the command line, what the one error line must say.

    Attributes:
        id: The test id.
        args: The command line; `MODEL` is replaced by a trained model's folder.
        words: Fragments the error line must contain (the problem and the fix).
        setup: Makes the case's files in the working folder.
        code: The documented exit code expected.
        needs_model: The case scores with a model trained once per module.
        may_write: Paths, relative to the working folder, under which the command may write.
    """

    id: str
    args: tuple[str, ...]
    words: tuple[str, ...]
    setup: Setup = lambda work: None
    code: int = EXIT_USAGE
    needs_model: bool = False
    may_write: tuple[str, ...] = ("mlruns", "models")


def make_outside(tmp: Path) -> Path:
    """A folder the user did not name, with a file and a `model/` folder: nothing may touch it."""
    outside = tmp / "outside"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "precious.txt").write_text("the user's own model folder\n")
    (outside / "notes.txt").write_text("the user's notes\n")
    return outside


def snapshot(root: Path, allowed: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every file and folder under `root` (outside `allowed`), by path, with its SHA-256."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path == a or a in path.parents for a in allowed):
            continue
        if path.is_symlink():
            found[str(path)] = f"<link {path.readlink()}>"
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[str(path)] = "<dir>"
        else:
            found[str(path)] = "<special>"
    return found


def check_error(code: int, stderr: str, case: Hostile) -> None:
    """The exit code, one error line that is the last line, no traceback, the case's words in it.

    Also used by `tests/pipeline/test_errors.py`, whose cases have the same `code` and `words`.
    """
    assert code == case.code, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("crispml: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr  # one error line, the last word
    others = [line for line in lines[:-1] if not line.startswith(("[", "crispml: warning: "))]
    assert not others, stderr  # anything before it is progress or a warning
    for words in case.words:
        assert words in errors[0], errors[0]


def run_case(case: Hostile, tmp: Path, model: Path | None, main: Callable[[list[str]], int], capsys, monkeypatch) -> str:
    """Run one case in `<tmp>/work` through `main` (the command line) and check everything; return stderr."""
    work = tmp / "work"
    work.mkdir()
    make_outside(tmp)
    case.setup(work)
    args = [str(model) if a == "MODEL" else a for a in case.args]
    allowed = tuple(work / p for p in case.may_write)
    before = snapshot(tmp, allowed)
    monkeypatch.chdir(work)
    code = main(args)
    err = capsys.readouterr().err
    check_error(code, err, case)
    assert snapshot(tmp, allowed) == before, "files outside the named folders were created, changed or removed"
    return err
