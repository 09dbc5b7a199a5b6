"""Where the modeling stage's fits run: one module per backend, each registering itself.

- `base`: the registry (`register`, `names`, `executor`, `preflight`) and the clock pieces both backends share.
- `local_pool`: `local`, a pool of this machine's worker processes under time and memory limits.
- `dask_cluster`: `dask`, a Dask distributed cluster (`--backend dask`).

A backend is an executor (`stages.fitting.Executor`): adding one is a module here that
registers its factory, and one import line below.
"""

from pipeline.backends import dask_cluster, local_pool  # noqa: F401  (each registers itself)
from pipeline.backends.base import executor, names, preflight

__all__ = ["executor", "names", "preflight"]
