"""What the modeling stage asks of whatever runs its fits: tasks, outcomes and a small protocol.

The stage cuts a comparison into tasks (one per candidate and fold) and hands them, with
one function and the data every task reads, to an `Executor`. An executor runs each task
and returns one `Outcome` per task, in task order, whatever ran where or when. How it
runs them, and which limits it can enforce, is its own business: the wiring's backends
(`pipeline.backends`: a pool of local worker processes, a Dask cluster) are executors, and
`IN_PROCESS` runs the tasks one after another in this process, which is all a stage's own
test needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stages.errors import Interrupted

NOT_IN_BUDGET = "not finished within the run's time budget (--time-budget / modeling.time_budget)"
"""The error of a task that the run's deadline stopped or never started."""


@dataclass(frozen=True)
class Task:
    """One unit of work.

    Attributes:
        group: The budget it counts against (a candidate's name).
        args: Passed to the function after the shared value.
    """

    group: str
    args: Any


@dataclass(frozen=True)
class Outcome:
    """What became of a task.

    Attributes:
        value: The function's return value, when it returned.
        error: Why there is no value (time limit, worker killed, exception), else "".
        retries: How many times it was started again after the worker running it died
            (Dask does so on another worker; the local pool fails the task instead).
    """

    value: Any = None
    error: str = ""
    retries: int = 0


GroupDone = Callable[[str, list[Outcome]], None]
"""Called with a group's name and its tasks' outcomes (in task order) once all of them are in."""
TaskDone = Callable[[int, int], None]
"""Called with (tasks finished, tasks in all) after each task, for progress displays."""
Judge = Callable[[int, Outcome], Mapping[str, str]]
"""Called with each task's index and outcome as it comes in (failures and tasks never started
included); returns `{group: reason}` of the groups whose tasks not yet started are not to start
(each gets `Outcome(error=reason)`); running ones finish."""
Pick = Callable[[Sequence[int]], int]
"""Called with the indices of the tasks waiting to start, in task order, when a worker is free;
returns the one to start (a position in that list). Without one, tasks start in task order."""


class Executor(Protocol):
    """Runs `fn(shared, task.args)` for every task; what the modeling stage is handed."""

    def run(
        self,
        fn: Callable[[Any, Any], Any],
        shared: Any,
        tasks: Sequence[Task],
        *,
        group_seconds: float | None = None,
        memory_bytes: int | None = None,
        on_group_done: GroupDone | None = None,
        on_task_done: TaskDone | None = None,
        deadline: float | None = None,
        judge: Judge | None = None,
        pick: Pick | None = None,
    ) -> list[Outcome]:
        """Run every task and return one outcome per task, in task order.

        Args:
            fn: A picklable function (cloudpickle: test-local classes are fine).
            shared: The data every task reads (sent once to each worker).
            tasks: The tasks, started in this order unless `pick` chooses.
            group_seconds: Wall-clock seconds a group's tasks may take in total; None for no limit.
            memory_bytes: Memory limit of each worker; None for no limit.
            on_group_done: See `GroupDone`.
            on_task_done: See `TaskDone`.
            deadline: `time.monotonic()` value by which every task must be done; a task not
                done by then gets `NOT_IN_BUDGET` as its error. None for no deadline.
            judge: See `Judge`; None runs every task.
            pick: See `Pick`; None keeps task order.

        Raises:
            Interrupted: Ctrl-C or SIGTERM; `partial` holds the outcomes so far (None for
                tasks that had not finished).
        """
        ...


def report_group(
    group: str, tasks: Sequence[Task], outcomes: Sequence[Outcome | None], on_group_done: GroupDone | None
) -> None:
    """Call `on_group_done` once every task of `group` has an outcome (call it after each outcome)."""
    if on_group_done is None:
        return
    mine = [outcomes[i] for i, t in enumerate(tasks) if t.group == group]
    if all(o is not None for o in mine):
        on_group_done(group, mine)  # type: ignore[arg-type]


@dataclass(frozen=True)
class InProcess:
    """Runs the tasks one after another in this process. It can enforce no time or memory limit
    (nothing can stop a call in its own process), so it refuses them."""

    def run(
        self,
        fn: Callable[[Any, Any], Any],
        shared: Any,
        tasks: Sequence[Task],
        *,
        group_seconds: float | None = None,
        memory_bytes: int | None = None,
        on_group_done: GroupDone | None = None,
        on_task_done: TaskDone | None = None,
        deadline: float | None = None,
        judge: Judge | None = None,
        pick: Pick | None = None,
    ) -> list[Outcome]:
        """See `Executor.run`.

        Raises:
            ValueError: A time or memory limit was given (use a worker pool for those).
        """
        if group_seconds is not None or memory_bytes is not None or deadline is not None:
            raise ValueError("tasks run in this process cannot be held to a time or memory limit; use a worker pool")
        outcomes: list[Outcome | None] = [None] * len(tasks)
        dropped: dict[str, str] = {}
        waiting = list(range(len(tasks)))
        try:
            while waiting:
                i = waiting.pop(pick(waiting) if pick is not None else 0)
                task = tasks[i]
                if task.group in dropped:
                    outcomes[i] = Outcome(error=dropped[task.group])
                else:
                    try:
                        outcomes[i] = Outcome(value=fn(shared, task.args))
                    except Exception as exc:  # a task's failure is an outcome
                        outcomes[i] = Outcome(error=f"{type(exc).__name__}: {exc}")
                if judge is not None:
                    dropped.update(judge(i, outcomes[i]))  # type: ignore[arg-type]
                report_group(task.group, tasks, outcomes, on_group_done)
                if on_task_done is not None:
                    on_task_done(len(tasks) - len(waiting), len(tasks))
        except KeyboardInterrupt as exc:
            raise Interrupted.carrying(exc, outcomes) from None
        return outcomes  # type: ignore[return-value]


IN_PROCESS = InProcess()
"""The executor a stage uses when it is handed none."""
