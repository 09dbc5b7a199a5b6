"""Imported by the worker processes' fork server only (`local_pool.PRELOAD`): it ends at once when crispml does.

The fork server, which imported scikit-learn, pandas and matplotlib for its workers, ends
when the crispml process ends. The interpreter's teardown of those modules then took 0.6 s,
during which the server still held crispml's standard output and error open: a shell, a
scheduler or `subprocess.run` reading them waited that long after crispml itself had exited.
Imported by the server, this module registers the server's last exit handler, which ends
it there. The workers are forked from the server and end by `os._exit` (multiprocessing's
own), so they never run it. Imported anywhere else (a test, a tool that imports every module),
it does nothing: a process that ended with exit code 0 whatever it meant to return would hide failures.
"""

from __future__ import annotations

import atexit
import os
import sys


def _end_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more can reach it
            pass
    os._exit(0)


def _imported_by_the_fork_server() -> bool:
    """Whether this import comes from the fork server's preloading (`multiprocessing.forkserver.main`)."""
    from multiprocessing import forkserver

    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


if _imported_by_the_fork_server():
    atexit.register(_end_now)
