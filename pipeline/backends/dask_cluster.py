"""The `dask` backend: run tasks on the workers of a Dask distributed cluster.

`DaskCluster` is the `local` backend's `LocalPool` for `--backend dask`: the same tasks, one
outcome per task in task order, the same callbacks. The shared value (the data) goes
once to every worker (a task whose result is replicated to all of them, so that Dask can
compute it again if the workers holding it die), and each task is one Dask future
(`Client.submit`), so each can be cancelled and each fails on its own. With a
scheduler address the run connects a client to that cluster and closes only the client;
without one it starts a `LocalCluster` of single-threaded worker processes, one per core,
and closes it at the end.

Why not joblib's Dask backend (`joblib.parallel_config(backend="dask")`), which the issue
suggested: it has no way to cancel one task, and when a task's worker dies (`KilledWorker`)
the error never reaches joblib's callback, so the whole `Parallel` call waits forever
(seen with joblib 1.6 and distributed 2026.8, in every `return_as` mode). A fit that goes
over a worker's memory is exactly the case this module must survive.

What differs from the local pool:

- Time limits (`group_seconds`, `deadline`). A Dask worker runs a task in one of its
  threads, and nothing can stop a running thread. Each task tells this process when it
  starts (a Dask worker event), so a group's time counts only while its tasks run, not
  while they queue. When a group overruns its budget, or at the deadline, its unfinished
  tasks fail at once with the local pool's message and their futures are cancelled: the
  queued ones never start, but one already running goes on until it ends, keeping its
  worker thread busy, and its result is dropped. A local cluster is shut down at the end
  of the run, which stops such tasks too.
- Memory and crashes. There is no address-space cap per task: the limit is each Dask
  worker's `memory_limit`, and a worker that goes over it is restarted by its nanny. Dask
  retries a task whose worker died on other workers; once it has killed
  `distributed.scheduler.allowed-failures` of them it fails with `KilledWorker`, alone
  (on a cluster of your own, `distributed.scheduler.worker-saturation: 1.0`, as on the
  local cluster, keeps Dask from blaming the tasks queued on a worker that died).
  The scheduler keeps a copy of the shared value (in the task that makes it) for the run.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pipeline.backends.base import group_time, next_check, register, run_task, timed_out_error
from pipeline.errors import ClusterError, ConfigError, Interrupted
from stages.fitting import NOT_IN_BUDGET, GroupDone, Judge, Outcome, Pick, Task, TaskDone, report_group

INSTALL_HINT = "--backend dask needs the 'distributed' package: pip install 'crispml[distributed]'"
"""The error when `distributed` is not installed."""
CONNECT_SECONDS = 5.0
"""How long a scheduler may take to answer before the run gives up on it."""
WORKER_WAIT_SECONDS = 30.0
"""How long to wait for a scheduler to have at least one worker."""


def run_on_dask(
    fn: Callable[[Any, Any], Any],
    shared: Any,
    tasks: Sequence[Task],
    scheduler: str = "",
    group_seconds: float | None = None,
    deadline: float | None = None,
    on_group_done: GroupDone | None = None,
    on_task_done: TaskDone | None = None,
    judge: Judge | None = None,
) -> list[Outcome]:
    """Run `fn(shared, task.args)` for every task on a Dask cluster's workers.

    Args:
        fn: A picklable function (cloudpickle), importable on the workers with its module.
        shared: Sent once to each worker: the data every task reads.
        tasks: The tasks; submitted in this order.
        scheduler: The scheduler's address (`tcp://host:8786`); empty starts a local cluster.
        group_seconds: Seconds a group's tasks may run in total; None for no limit.
        deadline: `time.monotonic()` value by which every task must be done; None for none.
        on_group_done: Called with a group's name and its outcomes (in task order) once all are in.
        on_task_done: Called with (finished, total) after each task.
        judge: Called with each outcome as it comes in; the queued tasks of the groups it
            names are cancelled (see `stages.fitting.Judge`); running ones finish.

    Returns:
        One outcome per task, in task order.

    Raises:
        ClusterError: `distributed` is not installed, the scheduler does not answer, or it
            has no workers.
        ConfigError: The scheduler address is malformed.
        Interrupted: Ctrl-C or SIGTERM; `partial` holds the outcomes so far (None for
            tasks that had not finished). The client, and a local cluster, are closed first.
    """
    run = _Run(fn, shared, tasks, group_seconds, deadline, on_group_done, on_task_done, judge)
    try:
        with _connect(scheduler) as client:
            try:
                run.start(client)
                run.wait(client)
            finally:
                run.release(client)
    except KeyboardInterrupt as exc:
        raise Interrupted.carrying(exc, list(run.outcomes)) from None
    return run.outcomes  # type: ignore[return-value]


@dataclass(frozen=True)
class DaskCluster:
    """The `dask` backend (`stages.fitting.Executor`): a Dask cluster's workers decide how many
    tasks run at once and how much memory they may use, so `n_jobs` and `memory_bytes` are not
    used, and neither is `pick` (the scheduler decides).

    Attributes:
        scheduler: The scheduler's address (`tcp://host:8786`); empty starts a local cluster.
    """

    scheduler: str = ""

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
        """See `stages.fitting.Executor.run` and `run_on_dask`."""
        if not tasks:
            return []
        return run_on_dask(fn, shared, tasks, self.scheduler, group_seconds, deadline, on_group_done, on_task_done, judge)


register("dask", preflight=lambda scheduler: check_cluster(scheduler))(lambda _n_jobs, scheduler: DaskCluster(scheduler))


def check_cluster(scheduler: str) -> None:
    """Raise now what `run_on_dask` would raise when it connects, before any work starts.

    Args:
        scheduler: The scheduler's address; empty (a local cluster) only checks the package.

    Raises:
        ClusterError: `distributed` is not installed, or the scheduler does not answer.
        ConfigError: The address is malformed.
    """
    _import_distributed()
    if scheduler:
        _knock(scheduler)


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run in each worker process of a local cluster as it starts.

    Ctrl-C in a terminal reaches the whole process group, local workers included; they
    ignore it, and this process shuts them down (as the local pool's workers do).

    Args:
        worker: The starting `distributed.Worker`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return distributed


def _knock(address: str) -> None:
    """Check that `address` is a scheduler address and that a Dask scheduler answers there."""
    from distributed.comm import get_address_host_port

    try:
        host, port = get_address_host_port(address)
    except (ValueError, TypeError) as exc:
        reason = str(exc)
    else:
        reason = "" if 0 < port < 65536 else f"port {port} is out of range"
    if reason:
        raise ConfigError(
            f"the Dask scheduler address '{address}' (--scheduler / modeling.scheduler) is malformed ({reason}); "
            "pass one like tcp://10.0.0.5:8786"
        )
    try:  # a plain TCP connection first: it fails at once on a closed port, where Dask would retry
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} ({_reason(exc)}); "
            f"start it ('dask scheduler', then 'dask worker {address}') or pass another --scheduler"
        ) from None
    try:  # then Dask's handshake, bounded: `Client` waits for it forever on a port that never replies
        _handshake(address)
    except Exception as exc:  # timed out, refused, or a TLS set-up Dask cannot use: all mean no scheduler here
        raise ClusterError(
            f"no Dask scheduler answered at {address} ({_reason(exc)}); "
            "check the address (--scheduler) and that a Dask scheduler of a compatible version runs there"
        ) from None


def _handshake(address: str) -> None:
    from distributed.comm import connect
    from distributed.security import Security

    async def knock() -> None:
        connecting = connect(address, timeout=CONNECT_SECONDS, **Security().get_connection_args("client"))
        comm = await asyncio.wait_for(connecting, CONNECT_SECONDS)
        await comm.close()

    with ThreadPoolExecutor(1) as pool:  # a thread of its own, so an event loop running here does not matter
        pool.submit(asyncio.run, knock()).result()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # also socket.timeout
        return f"no reply within {CONNECT_SECONDS:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextlib.contextmanager
def _connect(scheduler: str) -> Iterator[Any]:
    """A client of the cluster at `scheduler`, or of a new local cluster; both closed on exit."""
    distributed = _import_distributed()
    import dask
    cluster = None
    if scheduler:
        _knock(scheduler)  # again: the runner's `check_cluster` came before the store, and this is public
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_SECONDS, set_as_default=False)
        except OSError as exc:
            raise ClusterError(
                f"no Dask scheduler answered at {scheduler} ({_reason(exc)}); check the address (--scheduler) "
                "and that a Dask scheduler of a compatible version runs there"
            ) from None
    else:
        # One single-threaded worker process per core, like the local pool, each given one
        # task at a time (saturation 1.0), so that a worker that dies takes no queued task
        # down with its own. No dashboard (it needs bokeh), and the scheduler's HTTP server on
        # a free port, not 8787 with a warning when that is taken. Dask's logging off stderr:
        # each failed task's outcome carries the reason. This module as a preload, so that
        # the workers ignore Ctrl-C (`dask_setup`).
        with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
            cluster = distributed.LocalCluster(
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": ":0"},
                silence_logs=logging.CRITICAL,
                preload=[__name__],
            )
        client = distributed.Client(cluster, set_as_default=False)
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            if scheduler:
                raise ClusterError(
                    f"the Dask scheduler at {scheduler} has no workers (waited {WORKER_WAIT_SECONDS:g} s); "
                    f"start some ('dask worker {scheduler}') or pass another --scheduler"
                ) from None
            raise ClusterError(
                f"the local Dask cluster started no worker in {WORKER_WAIT_SECONDS:g} s; "
                "pass --scheduler ADDRESS of a running cluster, or use --backend local"
            ) from None
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@dataclass(frozen=True)
class _Started:
    """A worker began task `index` (a Dask worker event)."""

    index: int


@dataclass(frozen=True)
class _Done:
    """Task `index`'s future is done: finished, failed or cancelled."""

    index: int


@dataclass(frozen=True)
class _Reply:
    """What a task sends back: its value or its error, and how long it ran on its worker."""

    ok: bool
    payload: Any
    seconds: float


class _Run:
    """This process's side: one Dask future per task, the clocks, the outcomes."""

    def __init__(
        self,
        fn: Callable[[Any, Any], Any],
        shared: Any,
        tasks: Sequence[Task],
        group_seconds: float | None,
        deadline: float | None,
        on_group_done: GroupDone | None,
        on_task_done: TaskDone | None,
        judge: Judge | None = None,
    ) -> None:
        self.fn = fn
        self.judge = judge
        self.dropped: dict[str, str] = {}  # groups the judge stopped, with the reason
        self._dropped_done = 0  # how many of them `_drop` has cancelled
        self.shared = shared
        self.tasks = tasks
        self.group_seconds = group_seconds
        self.deadline = deadline
        self.on_group_done = on_group_done
        self.on_task_done = on_task_done
        self.outcomes: list[Outcome | None] = [None] * len(tasks)
        self.inbox: queue.SimpleQueue[_Started | _Done] = queue.SimpleQueue()
        self.futures: list[Any] = []
        self.started: dict[int, float] = {}  # running tasks: when this process heard they started
        self.retries: dict[int, int] = {}  # tasks Dask started again after their worker died
        self.spent: dict[str, float] = {}
        self.name = uuid.uuid4().hex  # in the run's keys on the cluster
        self.topic = f"crispml-{self.name}"  # of the tasks' start events

    def start(self, client: Any) -> None:
        """Put the shared value on every worker, then submit every task, in task order."""
        import dask

        client.subscribe_topic(self.topic, lambda event: self.inbox.put(_Started(event[1])))
        # The shared value is a task's result, not scattered data: if every worker holding
        # it dies, the scheduler computes it again (it keeps the task, value included),
        # where scattered data would be lost with the tasks still to run. Its size is on
        # purpose, so no "large graph" warning.
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "1 PiB"}):
            data = client.submit(_identity, self.shared, key=f"crispml-data-{self.name}", pure=False)
        client.replicate([data])  # a copy on every worker now, so the tasks spread over all of them
        # Keys in two groups, "crispml-data" and "crispml-task" (Dask groups keys by their
        # prefix), so that Dask sees many tasks on one shared input ("root-ish") and holds
        # them until a worker has a free thread, rather than queuing them on workers up
        # front, where a worker that dies would count against every task queued on it.
        for i, task in enumerate(self.tasks):
            key = f"crispml-task-{self.name}-{i}"
            future = client.submit(_attempt, self.fn, data, i, task.args, self.topic, key=key, pure=False)
            self._when_done(future, i)
            self.futures.append(future)

    def _when_done(self, future: Any, index: int) -> None:
        future.add_done_callback(lambda _: self.inbox.put(_Done(index)))  # called in a Dask thread

    def wait(self, client: Any) -> None:
        """Take what the workers report until every task has an outcome, failing what overruns its budget."""
        while self._unfinished():
            self._enforce_budgets(client)
            self._drop(client)  # a time-out can close a round too
            if not self._unfinished():
                return
            try:
                message = self.inbox.get(
                    timeout=next_check(self.tasks, self.spent, self.started, self.group_seconds, self.deadline)
                )
            except queue.Empty:
                continue
            if isinstance(message, _Started):
                if self.outcomes[message.index] is None:
                    if message.index in self.started:  # heard to start before, never finished: its worker died
                        self.retries[message.index] = self.retries.get(message.index, 0) + 1
                    self.started[message.index] = time.monotonic()
            elif self.outcomes[message.index] is None:  # else it was failed already (time limit)
                future = self.futures[message.index]
                if future.status in ("pending", "lost"):  # done, then its worker died: Dask runs it again
                    self._when_done(future, message.index)
                    self.started.pop(message.index, None)  # its next start is not counted as one more death
                    self.retries[message.index] = self.retries.get(message.index, 0) + 1
                    continue
                self.started.pop(message.index, None)
                outcome = self._outcome(message.index)
                lost = self.retries.get(message.index, 0)
                self._finish(message.index, dataclasses.replace(outcome, retries=lost) if lost else outcome)
                self._drop(client)

    def release(self, client: Any) -> None:
        """Cancel what is left of this run on the cluster (a running task still runs to its end)."""
        with contextlib.suppress(Exception):  # the scheduler may already be gone
            client.unsubscribe_topic(self.topic)
        with contextlib.suppress(Exception):
            client.cancel([self.futures[i] for i in self._unfinished() if i < len(self.futures)])

    def _outcome(self, index: int) -> Outcome:
        """The outcome of a task whose future is done."""
        from distributed import KilledWorker

        future = self.futures[index]
        if future.status == "finished":
            try:
                reply: _Reply = future.result()
            except Exception as exc:  # e.g. a result that cannot be unpickled here
                return Outcome(error=f"its result could not be sent back ({type(exc).__name__}: {exc})")
            group = self.tasks[index].group
            self.spent[group] = self.spent.get(group, 0.0) + reply.seconds
            return Outcome(value=reply.payload) if reply.ok else Outcome(error=reply.payload)
        exc = future.exception() if future.status == "error" else None
        if isinstance(exc, KilledWorker):
            return Outcome(
                error="its Dask worker process died while running it, on every worker that tried (KilledWorker), "
                "most likely for using more than the workers' memory_limit; give them more memory or leave the model out"
            )
        if isinstance(exc, ImportError):  # raised while the worker unpickles the task
            return Outcome(
                error=f"a Dask worker cannot import its code ({type(exc).__name__}: {exc}); install crispml and "
                "the same versions of its dependencies on every worker"
            )
        why = f"{type(exc).__name__}: {exc}" if exc is not None else f"its future was {future.status}"
        return Outcome(error=f"the Dask cluster could not run it ({why}); see the scheduler's and workers' logs")

    def _enforce_budgets(self, client: Any) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            client.cancel([self.futures[i] for i in self._unfinished()])
            for index in self._unfinished():
                self._finish(index, Outcome(error=NOT_IN_BUDGET))
            return
        if self.group_seconds is None:
            return
        for group in {self.tasks[i].group for i in self.started}:
            used, _ = group_time(group, self.tasks, self.spent, self.started, now)
            if used <= self.group_seconds:
                continue
            why = timed_out_error(self.group_seconds)
            mine = [i for i in self._unfinished() if self.tasks[i].group == group]
            client.cancel([self.futures[i] for i in mine])  # drops the queued ones; a running one runs on
            for index in mine:
                self.started.pop(index, None)
                self._finish(index, Outcome(error=why))

    def _drop(self, client: Any) -> None:
        """Cancel the tasks of the groups the judge stopped that have not started; running ones finish."""
        if len(self.dropped) == self._dropped_done:  # nothing new since the last look
            return
        self._dropped_done = len(self.dropped)
        mine = [i for i in self._unfinished() if self.tasks[i].group in self.dropped and i not in self.started]
        client.cancel([self.futures[i] for i in mine])
        for index in mine:
            self._finish(index, Outcome(error=self.dropped[self.tasks[index].group]))

    def _unfinished(self) -> list[int]:
        return [i for i, o in enumerate(self.outcomes) if o is None]

    def _finish(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        if self.judge is not None:  # every outcome, failures included
            self.dropped.update(self.judge(index, outcome))
        report_group(self.tasks[index].group, self.tasks, self.outcomes, self.on_group_done)
        if self.on_task_done is not None:
            self.on_task_done(sum(o is not None for o in self.outcomes), len(self.tasks))


def _identity(value: Any) -> Any:
    return value


def _attempt(fn: Callable[[Any, Any], Any], shared: Any, index: int, args: Any, topic: str) -> _Reply:
    """One task, on a Dask worker: say it started, then run it; its failure is a reply, not an error."""
    from distributed import get_worker

    with contextlib.suppress(Exception):  # unheard, its time counts from its result instead
        get_worker().log_event(topic, index)
    start = time.monotonic()
    ok, payload = run_task(fn, shared, args)  # a task's failure is an outcome, as in the local pool
    return _Reply(ok, payload, time.monotonic() - start)
