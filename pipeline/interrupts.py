"""SIGINT and SIGTERM as `Interrupted`, raised only where stopping is safe.

While `on_signals()` is active (the command line holds it), the first SIGINT or SIGTERM
raises `Interrupted` in the main thread, so a run cleans up as it does after Ctrl-C: it
marks its MLflow run KILLED and undoes an unfinished deployment. Inside a `held()` block
(a write to the tracking store, the export's swap, stopping worker processes) the signal
is only recorded, and raised when the outermost such block ends: a write cut half-way
would leave a SQLite transaction open, whose lock then blocks the very write that marks
the run KILLED. A signal whose `Interrupted` lands where Python ignores exceptions (a
`__del__` method, a weak-reference callback run by the garbage collector) is delivered
again, so it is not lost. A second signal, held or not, exits at once without clean-up.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from pipeline.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals turned into `Interrupted`."""

REDELIVERY_SECONDS = 0.01
"""How soon a signal whose `Interrupted` Python ignored is delivered again."""

_depth = 0  # how many `held()` blocks the main thread is in
_fired: list[int] = []  # every signal received while `on_signals()` is active
_pending: list[int] = []  # a signal received inside a `held()` block, not yet raised


@contextmanager
def on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` for the block (main thread only; elsewhere a no-op).

    Yields:
        Nothing; the previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _fired.clear()
    _pending.clear()
    previous = {s: signal.signal(s, _interrupt) for s in SIGNALS}
    hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, Interrupted) and info.exc_value.signum in _fired:
            _fired.remove(info.exc_value.signum)  # it stopped nothing: deliver it again, as the first
            # From another thread, a moment later: sent from here, it would land in this hook, which is ignored too.
            again = threading.Timer(REDELIVERY_SECONDS, os.kill, (os.getpid(), info.exc_value.signum))
            again.daemon = True
            again.start()
            return
        hook(info)

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for s, handler in previous.items():
            signal.signal(s, handler)
        _fired.clear()
        _pending.clear()


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block: one that arrives is raised as `Interrupted` when it ends.

    Blocks nest; the signal is raised when the outermost one ends, replacing (and chaining)
    any exception leaving it. In other threads than the main one (where Python runs signal
    handlers) it does nothing.

    Yields:
        Nothing.

    Raises:
        Interrupted: A signal arrived during the block.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            raise Interrupted(_pending.pop())


def check() -> None:
    """A safe point inside a `held()` block: raise a signal that arrived in it now, not at its end.

    Raises:
        Interrupted: A signal arrived and is not raised yet.
    """
    if _pending:
        raise Interrupted(_pending.pop())


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if _fired:
        print(f"crispml: {signal.Signals(signum).name} again; exiting without clean-up", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _fired.append(signum)
    if _depth:
        _pending.append(signum)
        return
    raise Interrupted(signum)
