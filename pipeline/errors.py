"""The exit codes the command line maps errors to, and the errors themselves (defined in `stages.errors`).

The command line prints an error as one line on stderr, with no traceback.
"""

from __future__ import annotations

import signal

from stages.errors import (  # noqa: F401  (re-exported: the wiring imports them from here)
    ClusterError,
    ConfigError,
    CrispmlError,
    DataError,
    Interrupted,
    ModelLoadError,
    TrackingError,
    UsageError,
    did_you_mean,
)


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (its type's name when it has none): for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


EXIT_OK = 0
"""The run finished and, where there is a gate, the model passed it."""
EXIT_BUG = 1
"""An unexpected error: a bug in crispml, reported with a traceback."""
EXIT_USAGE = 2
"""Bad command-line usage, configuration or data: the message says what to fix."""
EXIT_NO_GO = 3
"""The run finished but the model failed a business criterion (no-go): it is logged, not registered or exported."""
EXIT_CHALLENGER = 4
"""The model passed its gate but may be worse than the registry's champion: registered as `challenger`, not exported."""
EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Ctrl-C (SIGINT) stopped the run (130): its MLflow run is marked KILLED."""
EXIT_TERMINATED = 128 + signal.SIGTERM
"""SIGTERM stopped the run (143), e.g. a scheduler's time limit: its MLflow run is marked KILLED."""
