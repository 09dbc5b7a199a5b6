"""The worker pool: a group's clock counts its fits, not the pool's own start-up or a busy machine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.backends.local_pool import LocalPool
from stages.fitting import Task


class SlowToUnpickle:
    """Shared data whose unpickling in a fresh worker takes `seconds`: a worker's start-up, made slow on purpose."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self):
        return (_slow_rebuild, (self.seconds,))


def _slow_rebuild(seconds: float) -> SlowToUnpickle:
    time.sleep(seconds)
    return SlowToUnpickle(seconds)


def _quick(shared, args):
    return args * 2


def _sleep(shared, seconds):
    time.sleep(seconds)
    return seconds


def test_a_slow_worker_start_up_is_not_charged_to_the_fits(both_cores_busy):
    # Each fresh worker takes 4 s to start (unpickling the shared data), far over the 1.5 s
    # limit; the fits themselves take microseconds. Charging start-up would time them out.
    tasks = [Task(group, i) for group in ("a", "b") for i in range(3)]
    outcomes = LocalPool(2).run(_quick, SlowToUnpickle(4.0), tasks, group_seconds=1.5)
    assert [o.error for o in outcomes] == [""] * len(tasks)
    assert [o.value for o in outcomes] == [t.args * 2 for t in tasks]


def test_a_group_over_its_limit_still_times_out_and_the_others_finish(both_cores_busy):
    tasks = [Task("slow", 30.0), Task("quick", 0.1), Task("quick", 0.2)]
    start = time.monotonic()
    outcomes = LocalPool(2).run(_sleep, None, tasks, group_seconds=2.0)
    assert "timed out: its fits ran for more than 2 s in total" in outcomes[0].error
    assert [o.value for o in outcomes[1:]] == [0.1, 0.2]
    assert time.monotonic() - start < 25  # stopped long before its 30 s sleep, with room for a loaded machine


def _touch(folder, args):
    group, i = args
    (Path(folder) / f"{group}-{i}").touch()
    return i


@pytest.mark.parametrize(("n_jobs", "limit"), [(1, {}), (1, {"group_seconds": 600.0}), (2, {})])
def test_a_group_the_judge_stops_starts_no_more_tasks_and_the_others_run_on(tmp_path, n_jobs, limit):
    # n_jobs=1 without limits runs in this process; a time limit puts it in one worker process
    # Tasks in order: 'loser' first, then 'winner'; the judge stops 'loser' on its first outcome.
    tasks = [Task("loser", ("loser", i)) for i in range(4)] + [Task("winner", ("winner", i)) for i in range(4)]
    seen = []

    def judge(index, outcome):
        seen.append(index)
        return {"loser": "stopped by the judge"} if tasks[index].group == "loser" else {}

    outcomes = LocalPool(n_jobs).run(_touch, str(tmp_path), tasks, judge=judge, **limit)
    ran = [o for o in outcomes[:4] if not o.error]
    stopped = [o for o in outcomes[:4] if o.error]
    assert 1 <= len(ran) <= n_jobs  # what had started when the judge spoke finished
    assert stopped and all(o.error == "stopped by the judge" for o in stopped)
    assert len(list(tmp_path.glob("loser-*"))) == len(ran)  # the stopped ones never ran
    assert [o.value for o in outcomes[4:]] == [0, 1, 2, 3]
    assert sorted(seen) == list(range(8))  # the judge hears every outcome, the stopped ones too


def _not_imported(modules: tuple[str, ...]) -> list[str]:
    import sys

    return [m for m in modules if m not in sys.modules]


def test_workers_start_with_what_they_draw_with_and_the_fork_server_with_its_quick_exit():
    from functools import partial

    from pipeline.backends.local_pool import PRELOAD, run_calls

    wanted = ("matplotlib.figure", "stages.reporting", "pipeline.fork_server")
    assert set(wanted) <= set(PRELOAD)
    outcome = run_calls({"missing": partial(_not_imported, wanted)}, n_jobs=2)["missing"]
    assert outcome.error == "" and outcome.value == []  # forked from a server that imported them


def test_the_fork_servers_quick_exit_does_nothing_in_any_other_process():
    import subprocess
    import sys

    script = "import sys, pipeline.fork_server; sys.exit(5)"  # a test or a tool importing every module
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[3])
    assert proc.returncode == 5, proc.stderr


def _fails() -> None:
    raise ValueError("drawn badly")


def test_started_calls_run_in_worker_processes_and_a_failure_is_their_outcome():
    import os
    from functools import partial

    from pipeline.backends.local_pool import start_calls

    started = start_calls({"pid": os.getpid, "fails": partial(_fails)}, n_jobs=2)
    outcomes = started.outcomes()
    assert outcomes["pid"].error == "" and outcomes["pid"].value != os.getpid()
    assert "drawn badly" in outcomes["fails"].error and outcomes["fails"].value is None
    assert started.outcomes() is outcomes  # collected once, kept


def test_with_one_job_and_no_limit_started_calls_run_here_and_now():
    import os

    from pipeline.backends.local_pool import start_calls

    assert start_calls({"pid": os.getpid}, n_jobs=1).outcomes()["pid"].value == os.getpid()
