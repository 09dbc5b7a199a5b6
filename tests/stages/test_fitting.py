"""The executor protocol's in-process runner: one task after another, a failure an outcome, limits refused."""

from __future__ import annotations

import pytest

from stages.errors import Interrupted
from stages.fitting import IN_PROCESS, Outcome, Task


def _square(shared, x):
    if x < 0:
        raise ValueError("negative")
    return shared * x * x


def test_outcomes_come_back_in_task_order_and_a_failure_is_an_outcome():
    tasks = [Task("a", 1), Task("b", -1), Task("a", 3)]
    done, progress = {}, []
    outcomes = IN_PROCESS.run(_square, 2, tasks, on_group_done=lambda g, o: done.setdefault(g, o),
                              on_task_done=lambda i, n: progress.append((i, n)))
    assert outcomes == [Outcome(value=2), Outcome(error="ValueError: negative"), Outcome(value=18)]
    assert done == {"b": [outcomes[1]], "a": [outcomes[0], outcomes[2]]} and progress == [(1, 3), (2, 3), (3, 3)]


def test_a_judged_group_starts_no_more_tasks_and_pick_chooses_the_order():
    tasks = [Task("a", 1), Task("a", 2), Task("b", 3)]
    seen = []
    outcomes = IN_PROCESS.run(
        lambda _, x: seen.append(x) or x, None, tasks,
        judge=lambda i, o: {"a": "dropped"} if tasks[i].group == "b" else {},
        pick=lambda waiting: len(waiting) - 1,  # the last waiting task first
    )
    assert seen == [3] and outcomes == [Outcome(error="dropped"), Outcome(error="dropped"), Outcome(value=3)]


@pytest.mark.parametrize("limit", [{"group_seconds": 1.0}, {"memory_bytes": 1 << 30}, {"deadline": 0.0}])
def test_a_limit_it_cannot_enforce_is_refused(limit):
    with pytest.raises(ValueError, match="cannot be held to a time or memory limit; use a worker pool"):
        IN_PROCESS.run(_square, 1, [Task("a", 1)], **limit)


def test_an_interrupt_carries_the_outcomes_so_far():
    def stop_on_second(_, x):
        if x == 2:
            raise KeyboardInterrupt
        return x

    with pytest.raises(Interrupted) as stopped:
        IN_PROCESS.run(stop_on_second, None, [Task("a", 1), Task("a", 2), Task("a", 3)])
    assert stopped.value.partial == [Outcome(value=1), None, None]
