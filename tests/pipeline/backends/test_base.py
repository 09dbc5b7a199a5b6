"""The backends' registry: each backend registers itself, and a run's settings pick its executor."""

from __future__ import annotations

from pipeline import backends
from pipeline.backends.dask_cluster import DaskCluster
from pipeline.backends.local_pool import LocalPool


def test_both_backends_are_registered_the_default_first():
    assert backends.names() == ("local", "dask")


def test_the_settings_pick_the_executor():
    assert backends.executor("local", 3, "") == LocalPool(3)
    assert backends.executor("dask", 3, "tcp://127.0.0.1:8786") == DaskCluster("tcp://127.0.0.1:8786")
