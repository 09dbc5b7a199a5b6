"""The backends' registry and their shared pieces (`pipeline.backends.base`): a run's settings pick its executor; a group's clock."""

from __future__ import annotations

import time

import pytest

from pipeline import backends
from pipeline.backends import base
from pipeline.backends.dask_cluster import DaskCluster
from pipeline.backends.local_pool import LocalPool
from stages.fitting import Task


def test_both_backends_are_registered_the_default_first():
    assert backends.names() == ("local", "dask")


def test_the_settings_pick_the_executor():
    assert backends.executor("local", 3, "") == LocalPool(3)
    assert backends.executor("dask", 3, "tcp://127.0.0.1:8786") == DaskCluster("tcp://127.0.0.1:8786")


TASKS = [Task("svm", 0), Task("svm", 1), Task("mlp", 2)]


def test_a_groups_time_is_its_finished_tasks_plus_its_running_ones_so_far():
    spent = {"svm": 10.0, "mlp": 99.0}
    running = {1: 100.0, 2: 50.0}  # task 1 (svm) started at 100, task 2 (mlp) at 50
    assert base.group_time("svm", TASKS, spent, running, now=104.0) == (14.0, 1)
    assert base.group_time("linear", TASKS, spent, running, now=104.0) == (0.0, 0)


def test_the_next_check_comes_when_a_group_may_overrun_and_at_least_every_poll():
    now = time.monotonic()
    assert base.next_check(TASKS, {}, {0: now}, None, None) == pytest.approx(base.POLL_SECONDS)
    assert base.next_check(TASKS, {"svm": 9.8}, {0: now}, 10.0, None) < 0.5  # svm's budget runs out in 0.2 s
    assert base.next_check(TASKS, {}, {}, None, now - 5.0) == 0.01  # a deadline passed: check at once


def test_a_tasks_failure_is_an_outcome_with_its_error():
    assert base.run_task(lambda shared, args: shared + args, 1, 2) == (True, 3)
    assert base.run_task(lambda shared, args: 1 / args, None, 0) == (False, "ZeroDivisionError: division by zero")

    def hungry(shared, args):
        raise MemoryError("no room")

    assert base.run_task(hungry, None, None) == (False, "out of memory (MemoryError: no room)")


def test_the_timeout_error_names_the_limit_and_the_setting():
    message = base.timed_out_error(1.5)
    assert message.startswith("timed out: its fits ran for more than 1.5 s in total") and "modeling.candidate_timeout" in message
