"""The `local` backend: worker processes that run tasks under a time and a memory limit, so one bad task cannot stop the rest.

`LocalPool.run` runs every task in one shared pool of worker processes. Each task belongs to a
group (a candidate model) with a time budget: the wall time of all the group's tasks
added up. When a group overruns it, its running tasks' workers are killed and replaced,
and its remaining tasks are not started. A worker's address space is capped, so a task
that asks for too much memory gets a `MemoryError` in its own process instead of the
system's OOM killer picking a victim; a worker that dies anyway (killed, crashed) fails
only the task it was running. Results come back by task position, so they do not depend
on which worker ran what, or when.

Workers are forked from a server process that has already imported scikit-learn
(`multiprocessing`'s forkserver), so starting or replacing one takes milliseconds and
never copies the parent's MLflow connections or threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import cloudpickle

from pipeline import interrupts
from pipeline.backends.base import group_time, next_check, register, run_task, timed_out_error
from pipeline.errors import Interrupted
from stages.fitting import IN_PROCESS, NOT_IN_BUDGET, GroupDone, Judge, Outcome, Pick, Task, TaskDone, report_group

PRELOAD = (
    "numpy", "pandas", "sklearn", "stages.modeling", "stages.evaluation", "stages.reporting",
    "matplotlib.figure", "matplotlib.backends.backend_agg", "pipeline.fork_server",
)
"""Imported once by the fork server, so that each worker starts without importing them (workers draw
the plots too); `pipeline.fork_server` makes the server end at once when crispml does."""
WATCHDOG_SECONDS = 1.0
"""How often a worker checks that the process that started it is still there."""
MIN_AUTO_MEMORY = 2 << 30
"""The automatic memory limit per worker is never below 2 GiB of address space."""
_BEGUN = "begun"
"""A worker's first message about a task: it has begun it (after its own start-up), so its time counts from now."""


def auto_memory_limit(n_workers: int) -> int:
    """A default address-space limit per worker: three quarters of the memory, shared out.

    Args:
        n_workers: Workers that run at once.

    Returns:
        Bytes, at least `MIN_AUTO_MEMORY`.
    """
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    cgroup = Path("/sys/fs/cgroup/memory.max")
    with contextlib.suppress(OSError, ValueError):
        total = min(total, int(cgroup.read_text().strip())) if total else int(cgroup.read_text().strip())
    return max(MIN_AUTO_MEMORY, int(total * 0.75) // max(1, n_workers))


def worker_count(n_jobs: int, n_tasks: int) -> int:
    """How many workers to start for `n_jobs` (-1: one per core) and `n_tasks` tasks.

    Args:
        n_jobs: Parallel tasks asked for; negative counts back from the number of cores.
        n_tasks: Tasks to run.

    Returns:
        At least 1, at most `n_tasks`.
    """
    cores = os.cpu_count() or 1
    wanted = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, min(wanted, n_tasks))


def prestart() -> None:
    """Start the fork server now, so that it imports scikit-learn while this process does other work."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


@dataclass(frozen=True)
class LocalPool:
    """The `local` backend: this machine's worker processes (`stages.fitting.Executor`).

    With `n_jobs == 1` and no limit, the tasks run one after another in this process
    (nothing could be enforced there). Otherwise they run in worker processes, which also
    keeps a crash in native code from taking this process down. The deadline stops a
    running task too; `pick` chooses which waiting task a free worker starts.

    Attributes:
        n_jobs: Workers at once; -1 uses every core.
    """

    n_jobs: int = -1

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
        """See `stages.fitting.Executor.run`; `memory_bytes` caps each worker's address space.

        Raises:
            Interrupted: Ctrl-C or SIGTERM, once every worker is stopped.
        """
        if not tasks:
            return []
        if self.n_jobs == 1 and group_seconds is None and memory_bytes is None and deadline is None:
            return IN_PROCESS.run(
                fn, shared, tasks, on_group_done=on_group_done, on_task_done=on_task_done, judge=judge, pick=pick
            )
        return _Pool(
            fn, shared, tasks, worker_count(self.n_jobs, len(tasks)), group_seconds, memory_bytes, on_group_done,
            on_task_done, deadline, judge, pick,
        ).run()


register("local", preflight=lambda _scheduler: prestart())(lambda n_jobs, _scheduler: LocalPool(n_jobs))


def run_calls(
    calls: Mapping[str, Callable[[], Any]], n_jobs: int, memory_bytes: int | None = None
) -> dict[str, Outcome]:
    """Run independent calls side by side in worker processes (in this process with `n_jobs == 1` and no limit).

    Args:
        calls: Picklable calls without arguments (`functools.partial` of module-level
            functions), by name; they start in this order.
        n_jobs: Workers at once; -1 uses every core.
        memory_bytes: Address-space limit of each worker; None for no limit.

    Returns:
        `{name: outcome}`.

    Raises:
        Interrupted: Ctrl-C or SIGTERM.
    """
    names = list(calls)
    outcomes = LocalPool(n_jobs).run(_call, None, [Task(name, calls[name]) for name in names], memory_bytes=memory_bytes)
    return dict(zip(names, outcomes, strict=True))


class Started:
    """Calls running side by side in worker processes while the caller goes on (`start_calls`)."""

    def __init__(self, calls: Mapping[str, Callable[[], Any]], n_jobs: int, memory_bytes: int | None) -> None:
        self._outcomes: dict[str, Outcome] | None = None
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        if n_jobs == 1 and memory_bytes is None:  # no worker processes: they would run in this process anyway
            self._outcomes = run_calls(calls, n_jobs, memory_bytes)
            return
        # The thread only waits on the workers' pipes; a daemon, so that a run stopped by an
        # error or a signal exits without waiting for it (its workers follow their parent out).
        self._thread = threading.Thread(target=self._run, args=(calls, n_jobs, memory_bytes), name="crispml-calls", daemon=True)
        self._thread.start()

    def _run(self, calls: Mapping[str, Callable[[], Any]], n_jobs: int, memory_bytes: int | None) -> None:
        try:
            self._outcomes = run_calls(calls, n_jobs, memory_bytes)
        except BaseException as exc:  # handed to the caller by `outcomes`
            self._failure = exc

    def outcomes(self) -> dict[str, Outcome]:
        """Wait for the calls (a signal still interrupts the wait) and return `{name: outcome}`.

        Raises:
            Exception: What the pool itself raised (not a call's failure: that is its outcome's `error`).
        """
        if self._thread is not None:
            self._thread.join()
        if self._failure is not None:
            raise self._failure
        assert self._outcomes is not None
        return self._outcomes


def start_calls(calls: Mapping[str, Callable[[], Any]], n_jobs: int, memory_bytes: int | None = None) -> Started:
    """`run_calls` without waiting: the calls start in worker processes now, `Started.outcomes()` collects them.

    What the caller does meanwhile runs on the cores the workers leave free: plots drawn
    while the model is logged. With `n_jobs == 1` and no limit, the calls run here and now.

    Args:
        calls: As for `run_calls`.
        n_jobs: Workers at once; -1 uses every core.
        memory_bytes: Address-space limit of each worker; None for no limit.

    Returns:
        The calls under way.
    """
    return Started(calls, n_jobs, memory_bytes)


def _call(shared: Any, call: Callable[[], Any]) -> Any:
    return call()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    task: int | None = None
    started: float | None = None  # when the worker said it began the task; None while it is still starting up


class _Pool:
    """The parent's side: hands out tasks, watches the clocks, replaces dead workers."""

    def __init__(
        self,
        fn: Callable[[Any, Any], Any],
        shared: Any,
        tasks: Sequence[Task],
        n_workers: int,
        group_seconds: float | None,
        memory_bytes: int | None,
        on_group_done: GroupDone | None,
        on_task_done: TaskDone | None,
        deadline: float | None = None,
        judge: Judge | None = None,
        pick: Pick | None = None,
    ) -> None:
        self.tasks = tasks
        self.judge = judge
        self.pick = pick
        self.dropped: dict[str, str] = {}  # groups the judge stopped, with the reason
        self.deadline = deadline
        self.on_task_done = on_task_done
        self.n_workers = n_workers
        self.group_seconds = group_seconds
        self.memory_bytes = memory_bytes
        self.on_group_done = on_group_done
        self.fn, self.shared = fn, shared  # pickled for each worker as it starts, not held as bytes all run long
        self.threads = max(1, (os.cpu_count() or 1) // n_workers)
        self.context = _context()
        self.outcomes: list[Outcome | None] = [None] * len(tasks)
        self.pending = deque(range(len(tasks)))
        self.spent: dict[str, float] = {}
        self.timed_out: dict[str, str] = {}
        self.workers: list[_Worker] = []

    def run(self) -> list[Outcome]:
        try:
            try:
                while self.pending or any(w.task is not None for w in self.workers):
                    self._dispatch()
                    self._enforce_budgets()
                    busy = [w for w in self.workers if w.task is not None]
                    if not busy:
                        continue
                    ready = wait(
                        [x for w in busy for x in (w.conn, w.process.sentinel)],
                        next_check(self.tasks, self.spent, self._running(), self.group_seconds, self.deadline),
                    )
                    for worker in busy:
                        if worker.conn in ready or worker.process.sentinel in ready:
                            self._collect(worker)
            finally:
                with interrupts.held():  # a signal now is raised once every worker is stopped
                    for worker in self.workers:
                        _stop(worker, graceful=worker.task is None)
        except KeyboardInterrupt as exc:  # the outcomes so far, even when the signal came as the last one was in
            raise Interrupted.carrying(exc, list(self.outcomes)) from None
        return self.outcomes  # type: ignore[return-value]

    def _dispatch(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            while self.pending:
                self._finish(self.pending.popleft(), Outcome(error=NOT_IN_BUDGET))
        while self.pending:
            stopped = [i for i in self.pending if self.tasks[i].group in self.timed_out or self.tasks[i].group in self.dropped]
            for index in stopped:  # a group over its budget, or stopped by the judge: none of its tasks start
                self.pending.remove(index)
                group = self.tasks[index].group
                self._finish(index, Outcome(error=self.timed_out.get(group) or self.dropped[group]))
            if not self.pending:
                return
            worker = next((w for w in self.workers if w.task is None), None)
            if worker is None and len(self.workers) < self.n_workers:
                worker = self._start_worker()
            if worker is None:
                return
            index = self.pending[self.pick(list(self.pending)) if self.pick is not None else 0]
            self.pending.remove(index)
            try:
                worker.conn.send((index, self.tasks[index].args))
            except OSError:  # it died while idle; start another and retry the task
                self._discard(worker)
                self.pending.appendleft(index)
                continue
            worker.task, worker.started = index, None  # the clock starts when the worker says it began

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=_serve,
            args=(child_end, os.getpid(), self.threads, self.memory_bytes),
            daemon=True,
            name="crispml-worker",
        )
        with _main_script_hidden():
            process.start()
        child_end.close()
        worker = _Worker(process, parent_end)
        try:
            parent_end.send_bytes(cloudpickle.dumps((self.fn, self.shared)))
        except OSError:
            pass  # it died at once: the first task sent to it fails with its exit status
        self.workers.append(worker)
        return worker

    def _running(self) -> dict[int, float]:
        """The tasks whose fits have begun, with when: a worker still starting up is not charged."""
        return {w.task: w.started for w in self.workers if w.task is not None and w.started is not None}

    def _enforce_budgets(self) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            for worker in [w for w in self.workers if w.task is not None]:
                index = worker.task
                self._discard(worker)
                self._finish(index, Outcome(error=NOT_IN_BUDGET))
        if self.group_seconds is None:
            return
        running = self._running()
        for group in {self.tasks[i].group for i in running}:
            used, _ = group_time(group, self.tasks, self.spent, running, now)
            if used <= self.group_seconds:
                continue
            self.timed_out[group] = timed_out_error(self.group_seconds)
            for worker in [w for w in self.workers if w.task is not None and self.tasks[w.task].group == group]:
                index = worker.task
                self._discard(worker)
                self._finish(index, Outcome(error=self.timed_out[group]))

    def _collect(self, worker: _Worker) -> None:
        index = worker.task
        if index is None:  # only busy workers are collected
            return
        message = None
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[1] != _BEGUN:
                    break
                worker.started, message = time.monotonic(), None  # the fit begins: start its clock
                if not worker.conn.poll():
                    return
        except (OSError, EOFError):
            message = None
        if message is None:
            why = _death(worker.process)
            self._discard(worker)
            self._finish(index, Outcome(error=why))
            return
        _, ok, payload = message
        group = self.tasks[index].group
        begun = worker.started if worker.started is not None else time.monotonic()
        self.spent[group] = self.spent.get(group, 0.0) + time.monotonic() - begun
        worker.task = None
        self._finish(index, Outcome(value=payload) if ok else Outcome(error=payload))

    def _finish(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        if self.judge is not None:  # every outcome, failures included: a race must not wait for a failed fit
            self.dropped.update(self.judge(index, outcome))
        report_group(self.tasks[index].group, self.tasks, self.outcomes, self.on_group_done)
        if self.on_task_done is not None:
            self.on_task_done(sum(o is not None for o in self.outcomes), len(self.tasks))

    def _discard(self, worker: _Worker) -> None:
        _stop(worker, graceful=False)
        self.workers.remove(worker)


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start a worker that does not run the user's script again.

    multiprocessing's forkserver and spawn workers first import the parent's `__main__`
    (its file or module, as `__mp_main__`), so a script or notebook-exported file that calls
    crispml without an `if __name__ == "__main__":` guard would run once more in every worker,
    and fail there. A worker needs nothing from it: its work arrives by cloudpickle, which
    carries what the script defines by value. So for the moment a worker starts, `__main__`
    names no file and no module.
    """
    main = sys.modules.get("__main__")
    hidden = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__} if main else {}
    try:
        if "__file__" in hidden:
            del main.__dict__["__file__"]
        if "__spec__" in hidden:
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(hidden)


def _context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        return context
    return multiprocessing.get_context("spawn")


def _death(process: Any) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is None:
        return "its worker process stopped answering"
    if code < 0:
        name = signal.Signals(-code).name
        if -code == signal.SIGKILL:
            return f"its worker process was killed ({name}), most likely by the system for using too much memory"
        return f"its worker process crashed ({name})"
    return f"its worker process exited with code {code}"


def _stop(worker: _Worker, graceful: bool) -> None:
    if graceful and worker.process.is_alive():
        with contextlib.suppress(OSError):
            worker.conn.send(None)
        worker.process.join(timeout=2)
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join(timeout=5)
    worker.conn.close()


def _serve(conn: Connection, parent: int, threads: int, memory_bytes: int | None) -> None:
    """A worker's life: limits, the shared value, then one task after another until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    _watch_parent(parent)
    setup_error = ""
    try:
        if memory_bytes is not None:
            import resource

            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=threads)  # noqa: F841 (kept for the worker's life)
        fn, shared = cloudpickle.loads(conn.recv_bytes())
    except BaseException as exc:  # reported with each task this worker is given
        setup_error = f"its worker process could not start ({type(exc).__name__}: {exc})"
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, args = message
        if setup_error:
            conn.send((index, False, setup_error))
            continue
        conn.send((index, _BEGUN))  # the parent's clock for this task starts now, not while this worker started up
        reply = (index, *run_task(fn, shared, args))
        try:
            conn.send(reply)
        except Exception as exc:  # e.g. a result that cannot be pickled
            conn.send((index, False, f"its result could not be sent back ({type(exc).__name__}: {exc})"))


def _watch_parent(parent: int) -> None:
    """Exit when the process that started the pool is gone, even in the middle of a task."""
    first_ppid = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_SECONDS)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            if os.getppid() != first_ppid:
                os._exit(1)

    threading.Thread(target=watch, name="crispml-watchdog", daemon=True).start()
