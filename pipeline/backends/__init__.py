"""Where the modeling stage's fits run: one module per backend, each registering itself.

- `base`: the registry (`register`, `names`, `executor`, `preflight`) and the clock pieces both backends share.
- `local_pool`: `local`, a pool of this machine's worker processes under time and memory limits.
- `dask_cluster`: `dask`, a Dask distributed cluster (`--backend dask`).

A backend is an executor (`stages.fitting.Executor`): adding one is a module here that
registers its factory, and one import line below.
"""

# Each module registers its backend as it is imported; `local`, the default, first (`names()` keeps this order).
from pipeline.backends import local_pool  # noqa: F401

# isort: split
from pipeline.backends import dask_cluster  # noqa: F401
from pipeline.backends.base import executor, names, preflight

__all__ = ["executor", "names", "preflight"]
