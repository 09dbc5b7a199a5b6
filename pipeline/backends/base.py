"""The backends' registry and the pieces every backend shares: the time-out message, a group's clock.

A backend is a module of this package that registers a factory of executors
(`stages.fitting.Executor`) under its name with `register`; `executor` builds one for a
run's settings. The pieces below are how both backends count a group's time, so that a
candidate's budget means the same wherever its fits run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stages.fitting import Executor, Task

POLL_SECONDS = 1.0
"""Longest wait between two checks of the time budgets."""

Factory = Callable[[int, str], Executor]
"""Builds a backend's executor from `(n_jobs, scheduler address)`."""
Preflight = Callable[[str], None]
"""Checks a backend can run (with the scheduler's address) and starts what is slow to start."""
_FACTORIES: dict[str, Factory] = {}
_PREFLIGHTS: dict[str, Preflight] = {}


def register(name: str, preflight: Preflight | None = None) -> Callable[[Factory], Factory]:
    """A decorator: the factory builds the executors of backend `name` (`--backend name`).

    Args:
        name: The backend's name in config and on the command line.
        preflight: Run by `preflight` before any training (and before the store is
            touched); it raises the error the first fit would meet.
    """

    def add(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        if preflight is not None:
            _PREFLIGHTS[name] = preflight
        return factory

    return add


def preflight(kind: str, scheduler: str = "") -> None:
    """Run backend `kind`'s check and start-up (a local pool's fork server, a Dask scheduler's answer)."""
    check = _PREFLIGHTS.get(kind)
    if check is not None:
        check(scheduler)


def names() -> tuple[str, ...]:
    """The registered backends' names, in registration order."""
    return tuple(_FACTORIES)


def executor(kind: str, n_jobs: int = -1, scheduler: str = "") -> Executor:
    """The executor of backend `kind` for `n_jobs` parallel tasks (local) or a scheduler's address (dask).

    Raises:
        KeyError: No backend of that name is registered (config checks the name first).
    """
    return _FACTORIES[kind](n_jobs, scheduler)


def timed_out_error(group_seconds: float) -> str:
    """The error of every unfinished task of a group that ran out of its time budget."""
    return (
        f"timed out: its fits ran for more than {group_seconds:g} s in total "
        "(modeling.candidate_timeout); raise the limit or leave the model out"
    )


def group_time(
    group: str, tasks: Sequence[Task], spent: Mapping[str, float], running: Mapping[int, float], now: float
) -> tuple[float, int]:
    """Seconds a group's tasks have run (finished ones, plus the running ones so far) and how many run now.

    Args:
        group: The group.
        tasks: All tasks.
        spent: Seconds each group's finished tasks ran.
        running: `{task index: time.monotonic() when it started}` of the running tasks.
        now: `time.monotonic()`.
    """
    times = [now - t for i, t in running.items() if tasks[i].group == group]
    return spent.get(group, 0.0) + sum(times), len(times)


def next_check(
    tasks: Sequence[Task],
    spent: Mapping[str, float],
    running: Mapping[int, float],
    group_seconds: float | None,
    deadline: float | None,
) -> float:
    """Seconds until a running group may overrun its budget or the deadline passes (at most `POLL_SECONDS`)."""
    now = time.monotonic()
    waits = [POLL_SECONDS]
    if deadline is not None:
        waits.append(deadline - now + 0.01)
    if group_seconds is not None:
        for group in {tasks[i].group for i in running}:
            used, n_running = group_time(group, tasks, spent, running, now)
            waits.append((group_seconds - used) / n_running + 0.01)
    return max(0.01, min(waits))


def run_task(fn: Callable[[Any, Any], Any], shared: Any, args: Any) -> tuple[bool, Any]:
    """`(True, fn(shared, args))`, or `(False, error text)`: in a worker, a task's failure is an outcome."""
    try:
        return True, fn(shared, args)
    except MemoryError as exc:
        return False, f"out of memory (MemoryError: {exc})"
    except BaseException as exc:  # a task's failure is an outcome
        return False, f"{type(exc).__name__}: {exc}"
