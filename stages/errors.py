"""Typed errors a user can act on, raised by the stages and the wiring alike.

Every message says what failed, where, what it got, and how to fix it. They live here, below
`pipeline/`, so that the stages can raise them; the exit codes the command line maps them to
stay in `pipeline.errors`.
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable
from typing import Any


class CrispmlError(Exception):
    """Base of every error a user can cause and fix (the command line exits with code 2 on each)."""


class UsageError(CrispmlError, ValueError):
    """The command line was used wrongly (unknown option, bad value)."""


class ConfigError(CrispmlError, ValueError):
    """The configuration file or a flag that overrides it is invalid."""


class DataError(CrispmlError, ValueError):
    """The data cannot be used as it is (missing file, missing column, unusable target...)."""


class TrackingError(CrispmlError, RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


class ClusterError(CrispmlError, RuntimeError):
    """The Dask cluster of `--backend dask` cannot be used (package missing, scheduler unreachable, no workers)."""


class ModelLoadError(CrispmlError, ValueError):
    """A saved model cannot be found or loaded."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run.

    A `KeyboardInterrupt`, so everything that cleans up after Ctrl-C cleans up after
    SIGTERM too. A stage that was stopped half-way attaches what it had finished.

    Args:
        signum: The signal that stopped the run.
        partial: What the interrupted stage had finished (e.g. a partial leaderboard), or None.
    """

    def __init__(self, signum: int = signal.SIGINT, partial: Any = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.partial = partial

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum

    @classmethod
    def carrying(cls, interrupt: KeyboardInterrupt, partial: Any) -> Interrupted:
        """The same interruption, now carrying a stage's partial result.

        Args:
            interrupt: The interruption caught (a plain `KeyboardInterrupt` is a SIGINT).
            partial: What was finished.

        Returns:
            A new `Interrupted` with the same signal.
        """
        return cls(getattr(interrupt, "signum", signal.SIGINT), partial)


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
