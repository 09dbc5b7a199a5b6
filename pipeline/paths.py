"""Where `crispml run` writes: every output path resolved and checked to stay inside the folder the user named.

The export goes to `<out>/<experiment>/model`. The experiment name is checked at configuration
time (`pipeline.config.experiment_name_problem`); these checks are the second line: whatever
the name, a symbolic link or a race, no write may land outside `--out`, and a folder the
user made is never replaced by an export.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline.errors import ConfigError

MODEL_FOLDER = "model"
"""The exported model's folder inside `<out>/<experiment>/`."""
EXPORT_MARKER = "manifest.json"
"""The file every crispml export holds (`pipeline.exports.MANIFEST`): an existing folder without it is not replaced."""


def inside(root: Path, path: Path, what: str) -> Path:
    """Check that a path crispml is about to write resolves inside `root`.

    Both are resolved (symbolic links followed, `..` collapsed; the parts that do not exist
    yet are taken as written), so neither an absolute part, nor `..`, nor a link can lead out.

    Args:
        root: The folder the user named for writing (`--out`, the store's folder).
        path: The path to write, as crispml will use it.
        what: What the path is, for the message (`"the export folder of experiment 'x'"`).

    Returns:
        `path`, unchanged.

    Raises:
        ConfigError: `path` resolves outside `root`.
    """
    base = Path(root).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(base):
        raise ConfigError(
            f"{what}, {path}, resolves to {resolved}, outside {root} ({base}), where crispml may write; "
            "pass an --experiment name without '/' or '..', and remove any symbolic link under --out that leads out of it"
        )
    return Path(path)


def export_target(out: Path, experiment: str) -> Path:
    """The exported model's folder, `<out>/<experiment>/model`, checked to stay inside `out`.

    Args:
        out: The export folder (`deployment.out`).
        experiment: The experiment name.

    Returns:
        `<out>/<experiment>/model`, as a path relative to what `out` is.

    Raises:
        ConfigError: The folder would lie outside `out`.
    """
    target = Path(out) / experiment / MODEL_FOLDER
    return inside(out, target, f"the export folder of experiment {experiment!r}")


def check_export_target(out: Path, experiment: str) -> Path:
    """Fail before any training when the model could not be exported to `<out>/<experiment>/model`.

    Checks that the folder stays inside `out`; that `out`, its parents and `<out>/<experiment>`
    are folders or can be made (a file in the way, a read-only or special file system such as
    `/proc`); that `<out>/<experiment>` can be written; and that an existing `model` folder
    there is a crispml export (holds `manifest.json`), since an export replaces it. Folders
    made to prove this are removed again, so a run that fails later leaves nothing behind.

    Args:
        out: The export folder (`deployment.out`); relative paths are relative to the working folder.
        experiment: The experiment name (already checked by `pipeline.config.experiment_name_problem`).

    Returns:
        The export folder, `<out>/<experiment>/model`.

    Raises:
        ConfigError: Naming the path in the way, or why it cannot be written, and the fix.
    """
    out = Path(out)
    target = export_target(out, experiment)
    _check_no_file_in_the_way(out, target.parent)
    _probe_writable(out, target.parent)
    check_replaceable(target)
    return target


def check_replaceable(target: Path) -> None:
    """Check that an export may replace whatever is at `target`: nothing, or an earlier crispml export.

    Call it again just before the old folder is moved away: a folder the user made (a
    `model/` of their own) must never be replaced.

    Args:
        target: `<out>/<experiment>/model`.

    Raises:
        ConfigError: `target` is a file, a symbolic link, or a folder without `manifest.json`.
    """
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        kind = "a symbolic link" if target.is_symlink() else "a file, not a folder"
        raise ConfigError(
            f"{target}, where the model is exported, is {kind}; move it away, or pass another --out or --experiment"
        )
    if target.is_dir() and not (target / EXPORT_MARKER).is_file():
        raise ConfigError(
            f"{target} exists and is not a crispml export (it has no {EXPORT_MARKER}), and an export would replace it; "
            "move it away, or pass another --out or --experiment"
        )


def _check_no_file_in_the_way(out: Path, folder: Path) -> None:
    """Every existing part of `folder` (from the root down) must be a folder."""
    for part in reversed((folder, *folder.parents)):
        if part.is_dir():
            continue
        if not (part.exists() or part.is_symlink()):
            return  # this part and the ones below it are made by the export
        kind = "a broken symbolic link" if part.is_symlink() and not part.exists() else "a file, not a folder"
        if part == out:
            raise ConfigError(
                f"--out {out} is {kind}; pass a folder for the exports with --out (it is made if missing)"
            )
        if part in out.parents:
            raise ConfigError(
                f"--out {out} lies under {part}, which is {kind}; pass a folder path whose parents are folders"
            )
        raise ConfigError(
            f"{part}, the folder of experiment {folder.name!r} under --out {out}, is {kind}; "
            "move it away, or pass another --out or --experiment"
        )


def _probe_writable(out: Path, folder: Path) -> None:
    """Make `folder` (and its missing parents) and a file in it, then remove what was made.

    Only trying tells: as root, `os.access` says yes to `/proc`, which refuses every `mkdir`.
    """
    made: list[Path] = []
    doing = f"write in {folder}"
    try:
        for part in reversed((folder, *folder.parents)):
            if not part.is_dir():
                doing = f"make the folder {part}"
                part.mkdir()
                made.append(part)
        doing = f"write in {folder}"
        with tempfile.TemporaryFile(dir=folder, prefix=".crispml-probe-"):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--out {out} cannot be used: cannot {doing} ({why}); pass a folder you can write to with --out"
        ) from None
    finally:
        for part in reversed(made):
            try:
                os.rmdir(part)
            except OSError:  # another run put something there meanwhile: it is theirs now
                break
