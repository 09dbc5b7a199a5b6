"""Typed errors a user can act on, and the exit codes the command line maps them to.

Every message says what failed, where, what it got, and how to fix it. The command line
prints it as one line on stderr, with no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
"""The run finished and, where there is a gate, the model passed it."""
EXIT_BUG = 1
"""An unexpected error: a bug in crispml, reported with a traceback."""
EXIT_USAGE = 2
"""Bad command-line usage, configuration or data: the message says what to fix."""


class CrispmlError(Exception):
    """Base of every error a user can cause and fix."""

    exit_code = EXIT_USAGE


class UsageError(CrispmlError, ValueError):
    """The command line was used wrongly (unknown option, bad value)."""


class ConfigError(CrispmlError, ValueError):
    """The configuration file or a flag that overrides it is invalid."""


class DataError(CrispmlError, ValueError):
    """The data cannot be used as it is (missing file, missing column, unusable target...)."""


class TrackingError(CrispmlError, RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


class ModelLoadError(CrispmlError, ValueError):
    """A saved model cannot be found or loaded."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a `; did you mean 'x'?` hint for a misspelt name, or an empty string.

    Args:
        name: The name the user gave.
        choices: The valid names.

    Returns:
        The hint, starting with `; `, or `""` when nothing is close.
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
