"""`--backend dask`: the fits run on a Dask cluster's workers, with the local run's results."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.backends import dask_cluster
from pipeline.backends.dask_cluster import DaskCluster, check_cluster, run_on_dask
from pipeline.errors import ClusterError, ConfigError, Interrupted
from pipeline.runner import RunResult, run
from stages.fitting import NOT_IN_BUDGET, Outcome, Task
from stages.model_registry import ModelSettings, build_candidates
from stages.modeling import compare_models, make_folds

from conftest import config_for

MODELS = {"modeling.models": ("baseline", "linear", "random_forest", "svm")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, and a client to ask them things; closed after the module."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield cluster, client


def _task_functions():
    """The tasks the tests run on a cluster. Being local, they travel by value (cloudpickle),
    so the workers need not import this module, and MLflow with it: seconds per worker."""

    def touch_and_sleep(folder: str, args: tuple[str, int, float]) -> int:
        """Leaves a trace that it started, then takes `seconds`; fails in group 'bad'."""
        group, index, seconds = args
        Path(folder, f"{group}-{index}").touch()
        time.sleep(seconds)
        if group == "bad":
            raise ValueError(f"bad task {index}")
        return os.getpid()

    def crash(shared: None, args: tuple[str, int]) -> int:
        """Kills its worker process in group 'crash', as a fit that the system kills would."""
        if args[0] == "crash":
            os._exit(1)
        time.sleep(0.5)
        return os.getpid()

    def crash_once(folder: str, args: tuple[str, int]) -> int:
        """Kills its worker the first time it runs (a marker file remembers), then succeeds."""
        marker = Path(folder, f"{args[0]}-{args[1]}")
        if args[0] == "once" and not marker.exists():
            marker.touch()
            time.sleep(2.0)  # a fit under way (its start has reached the scheduler), then the system kills it
            os._exit(1)
        time.sleep(0.3)
        return os.getpid()

    return touch_and_sleep, crash, crash_once


_touch_and_sleep, _crash, _crash_once = _task_functions()


# The user's mistakes: each a one-line typed error.


def test_without_distributed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    expected = r"^--backend dask needs the 'distributed' package: pip install 'crispml\[distributed\]'$"
    with pytest.raises(ClusterError, match=expected):
        check_cluster("")
    with pytest.raises(ClusterError, match=expected):
        DaskCluster().run(_touch_and_sleep, "", [Task("a", ("a", 0, 0.0))])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("tcp://host:port", "invalid literal"),
        ("localhost", "missing port"),
        ("http://10.0.0.5:8786", "unknown address scheme"),
        ("tcp://10.0.0.5:99999", "out of range"),
    ],
)
def test_a_malformed_scheduler_address_is_a_config_error(address, reason):
    expected = rf"^the Dask scheduler address '{re.escape(address)}' .* is malformed \(.*{reason}.*\); pass one like tcp://"
    with pytest.raises(ConfigError, match=expected):
        run_on_dask(_touch_and_sleep, "", [Task("a", ("a", 0, 0.0))], address)


def test_a_scheduler_that_does_not_answer_is_named():
    address = f"tcp://127.0.0.1:{_free_port()}"
    expected = (
        rf"^cannot reach the Dask scheduler at {re.escape(address)} \(Connection refused\); "
        r"start it .* or pass another --scheduler$"
    )
    with pytest.raises(ClusterError, match=expected):
        run_on_dask(_touch_and_sleep, "", [Task("a", ("a", 0, 0.0))], address)


def test_a_port_where_no_dask_scheduler_talks_is_named(monkeypatch):
    monkeypatch.setattr(dask_cluster, "CONNECT_SECONDS", 1.0)
    with socket.socket() as mute:  # accepts connections (the kernel does) but never speaks Dask
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        address = f"tcp://127.0.0.1:{mute.getsockname()[1]}"
        expected = rf"^no Dask scheduler answered at {re.escape(address)} \(no reply within 1 s\); check the address"
        with pytest.raises(ClusterError, match=expected):
            run_on_dask(_touch_and_sleep, "", [Task("a", ("a", 0, 0.0))], address)


@pytest.mark.slow
def test_a_scheduler_without_workers_is_named(monkeypatch):
    monkeypatch.setattr(dask_cluster, "WORKER_WAIT_SECONDS", 1.0)
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as empty:
        address = empty.scheduler_address
        expected = rf"^the Dask scheduler at {re.escape(address)} has no workers \(waited 1 s\); start some"
        with pytest.raises(ClusterError, match=expected):
            run_on_dask(_touch_and_sleep, "", [Task("a", ("a", 0, 0.0))], address)


@pytest.mark.slow
def test_the_command_line_reports_an_unreachable_scheduler_in_one_line(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "pipeline", "run", "--models", "baseline", "--folds", "2"]
    proc = subprocess.run(
        [*command, "--backend", "dask", "--scheduler", address],
        check=False, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"crispml: error: cannot reach the Dask scheduler at {address} ")


# The contract of `run_tasks`, on a cluster.


@pytest.mark.slow
def test_outcomes_come_back_in_task_order_with_each_failure_and_every_callback(cluster, tmp_path):
    scheduler, client = cluster[0].scheduler_address, cluster[1]
    tasks = [Task(group, (group, i, 0.05 * (3 - i))) for group in ("bad", "good") for i in range(3)]
    groups, progress = [], []
    outcomes = run_on_dask(
        _touch_and_sleep, str(tmp_path), tasks, scheduler,
        on_group_done=lambda group, outs: groups.append((group, [o.error or "ok" for o in outs])),
        on_task_done=lambda finished, total: progress.append((finished, total)),
    )
    assert [o.error for o in outcomes[:3]] == [f"ValueError: bad task {i}" for i in range(3)]
    assert all(o.error == "" for o in outcomes[3:])
    assert {o.value for o in outcomes[3:]} <= set(client.run(os.getpid).values())
    assert sorted(groups) == [("bad", [f"ValueError: bad task {i}" for i in range(3)]), ("good", ["ok"] * 3)]
    assert progress == [(k, 6) for k in range(1, 7)]


@pytest.mark.slow
def test_a_group_over_its_time_budget_fails_and_its_queued_tasks_do_not_run(cluster, tmp_path):
    # Both workers take a 'slow' task; the group overruns 1 s while they run, so its third
    # task, still queued, is cancelled: it never starts, and the 'fast' group still runs.
    tasks = [Task("slow", ("slow", i, 2.0)) for i in range(3)] + [Task("fast", ("fast", i, 0.0)) for i in range(2)]
    started = time.monotonic()
    outcomes = run_on_dask(_touch_and_sleep, str(tmp_path), tasks, cluster[0].scheduler_address, group_seconds=1.0)
    assert all(o.error.startswith("timed out: its fits ran for more than 1 s in total") for o in outcomes[:3])
    assert all(o.error == "" for o in outcomes[3:])
    assert (tmp_path / "slow-0").exists() and (tmp_path / "slow-1").exists()
    assert not (tmp_path / "slow-2").exists()
    assert time.monotonic() - started < 60  # generous: the cancelled task's file is the real check


@pytest.mark.slow
def test_a_group_the_judge_stops_has_its_queued_tasks_cancelled_and_the_others_run(cluster, tmp_path):
    # Two one-thread workers take 'loser' tasks (2 s each; Dask may have handed each worker a
    # second one, which starts as the first ends). The judge stops the group on its first
    # outcome, so the rest, still queued, never start; 'winner' runs whole.
    tasks = [Task("loser", ("loser", i, 2.0)) for i in range(8)] + [Task("winner", ("winner", i, 0.0)) for i in range(3)]
    seen = []

    def judge(index, outcome):
        seen.append(index)
        return {"loser": "stopped by the judge"} if tasks[index].group == "loser" else {}

    outcomes = run_on_dask(_touch_and_sleep, str(tmp_path), tasks, cluster[0].scheduler_address, judge=judge)
    ran = [i for i in range(8) if not outcomes[i].error]
    assert 1 <= len(ran) <= 4 and all(outcomes[i].error == "stopped by the judge" for i in range(8) if i not in ran)
    assert all(not o.error for o in outcomes[8:])
    assert sorted(seen) == list(range(11))
    time.sleep(2.5)  # a queued task that started anyway would have left its file by now
    assert len(list(tmp_path.glob("loser-*"))) <= 4


@pytest.mark.slow
def test_tasks_not_done_by_the_deadline_are_not_in_budget(cluster, tmp_path):
    tasks = [Task("quick", ("quick", 0, 0.0))] + [Task("slow", ("slow", i, 3.0)) for i in range(4)]
    deadline = time.monotonic() + 2.5
    outcomes = run_on_dask(_touch_and_sleep, str(tmp_path), tasks, cluster[0].scheduler_address, deadline=deadline)
    assert outcomes[0].error == ""
    assert [o.error for o in outcomes[1:]] == [NOT_IN_BUDGET] * 4
    time.sleep(2.0)  # past the end of the two running slow tasks: the queued ones were cancelled, not started
    assert (tmp_path / "slow-0").exists() and (tmp_path / "slow-1").exists()
    assert not (tmp_path / "slow-2").exists() and not (tmp_path / "slow-3").exists()


@pytest.mark.slow
def test_a_groups_time_counts_while_its_tasks_run_not_while_they_queue(cluster, tmp_path):
    # Two 1.5 s tasks hold both workers (3 s for their group); the four 0.2 s tasks queued behind
    # them wait about 1.5 s each. Counting that wait, their group would use about 7 s of its 4 s budget.
    tasks = [Task("first", ("first", i, 1.5)) for i in range(2)] + [Task("queued", ("queued", i, 0.2)) for i in range(4)]
    outcomes = run_on_dask(_touch_and_sleep, str(tmp_path), tasks, cluster[0].scheduler_address, group_seconds=4.0)
    assert [o.error for o in outcomes] == [""] * 6


@pytest.mark.slow
def test_a_task_that_kills_its_workers_fails_alone():
    # Its own local cluster, whose workers this kills: Dask retries the task on restarted
    # workers, then fails it with KilledWorker; the other tasks are not affected.
    tasks = [Task("crash", ("crash", 0))] + [Task("other", ("other", i)) for i in range(6)]
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # two deaths, not four: quicker
        outcomes = run_on_dask(_crash, None, tasks)
    assert outcomes[0].error.startswith("its Dask worker process died while running it, on every worker that tried")
    assert all(o.error == "" and o.value > 0 for o in outcomes[1:])


@pytest.mark.slow
def test_a_fit_run_again_after_its_worker_died_says_so(tmp_path):
    # Its own local cluster: the task kills its worker once; Dask runs it again on a restarted one.
    tasks = [Task("once", ("once", 0))] + [Task("other", ("other", i)) for i in range(3)]
    outcomes = run_on_dask(_crash_once, str(tmp_path), tasks)
    assert outcomes[0].error == "" and outcomes[0].value > 0 and outcomes[0].retries >= 1
    assert all(o.error == "" and o.retries == 0 for o in outcomes[1:])


def test_a_fold_run_again_is_a_warning_of_its_candidate_and_a_line_on_stderr():
    from pipeline import phases, runner
    from stages.fold_fits import FoldResult
    from stages.modeling import RETRIED, _fold_results, _summarise

    fold = FoldResult("svm", 0, {"accuracy": 0.9}, 0.1, 0.01)
    results = _fold_results("svm", [Outcome(value=fold, retries=2), Outcome(value=FoldResult("svm", 1, {"accuracy": 0.8}, 0.1, 0.01))])
    assert results[0].warnings == (f"fold 1: {RETRIED} 2 time(s)",) and results[1].warnings == ()
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    row = _summarise("svm", make_pipeline(SVC()), results)
    assert row.warnings == results[0].warnings  # what the candidate's child run records (crispml.warnings)
    seen = []
    runner._report_candidate(row, "accuracy", lambda stage, message, done=None: seen.append((stage, message)))
    assert seen[1] == (phases.WARNING, f"svm: fold 1: {RETRIED} 2 time(s)")


@pytest.mark.slow
def test_an_interruption_carries_the_outcomes_so_far(cluster, tmp_path):
    def stop_after_first(finished: int, total: int) -> None:
        raise KeyboardInterrupt

    tasks = [Task("a", ("a", i, 0.2 * i)) for i in range(4)]
    with pytest.raises(Interrupted) as stop:
        run_on_dask(_touch_and_sleep, str(tmp_path), tasks, cluster[0].scheduler_address, on_task_done=stop_after_first)
    assert sum(o is not None for o in stop.value.partial) == 1 and len(stop.value.partial) == 4


# The whole pipeline.


@dataclass(frozen=True)
class _Runs:
    dask: RunResult
    local: RunResult
    worker_pids: frozenset[int]


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> _Runs:
    """The same config run on the cluster and with the local worker pool."""
    tmp = tmp_path_factory.mktemp("dask")
    on_dask = {"modeling.backend": "dask", "modeling.scheduler": cluster[0].scheduler_address}
    on_cluster = run(config_for(tmp / "dask", **MODELS, **on_dask))
    local = run(config_for(tmp / "local", **MODELS))
    return _Runs(on_cluster, local, frozenset(cluster[1].run(os.getpid).values()))


def _board(result: RunResult) -> list[tuple[str, str, dict]]:
    return [(row.name, row.status, row.fold_scores) for row in result.leaderboard.rows]


@pytest.mark.slow
def test_every_fit_ran_on_the_cluster_workers(runs):
    pids = [_pid(w) for row in runs.dask.leaderboard.rows for w in row.workers]
    assert len(pids) == 4 * 5
    assert set(pids) <= runs.worker_pids and len(set(pids)) >= 2
    assert os.getpid() not in pids


@pytest.mark.slow
def test_the_leaderboard_is_the_local_runs(runs):
    assert all(row.status == "ok" for row in runs.dask.leaderboard.rows)
    assert _board(runs.dask) == _board(runs.local)
    assert runs.dask.evaluation.model == runs.local.evaluation.model


@pytest.mark.slow
def test_a_second_comparison_on_the_same_workers_does_not_reuse_the_first_ones_prepared_folds(cluster):
    # A cluster of your own keeps its workers, and each worker's cache of prepared folds,
    # from one comparison to the next; two data sets prepared the same way must not mix.
    scheduler = DaskCluster(scheduler=cluster[0].scheduler_address)
    candidates = build_candidates(["linear", "random_forest"], StandardScaler(), ModelSettings("regression", 0))
    # The reference: each candidate prepares its own folds (an extra step turns the sharing off).
    unshared = {name: Pipeline([p.steps[0], ("same", "passthrough"), p.steps[-1]]) for name, p in candidates.items()}
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
        y = X["a"] * (1 if seed == 0 else -3) + rng.normal(scale=0.1, size=200)
        folds = make_folds(y, "regression", 3, 0)
        on_dask = compare_models(candidates, X, y, folds, "regression", "r2", scheduler)
        here = compare_models(unshared, X, y, folds, "regression", "r2")
        assert [(r.name, r.fold_scores) for r in on_dask.rows] == [(r.name, r.fold_scores) for r in here.rows]


@pytest.mark.slow
def test_the_command_line_starts_and_stops_its_own_local_cluster(tmp_path):
    command = [sys.executable, "-m", "pipeline", "run", "--models", "baseline,linear", "--folds", "3", "--json"]
    command += ["--backend", "dask"]  # and no --scheduler
    with subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "distributed." not in stderr  # no Dask log lines
    out = json.loads(stdout)
    client = MlflowClient(out["tracking_uri"].replace("sqlite:///", f"sqlite:///{tmp_path}/"))
    parent = client.get_run(out["run_id"])
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{out['run_id']}'")
    workers = {w for r in children for w in r.data.tags["crispml.workers"].split(",")}
    assert len(children) == 2 and workers
    assert proc.pid not in {_pid(w) for w in workers}
    assert not any(_alive(_pid(w)) for w in workers)  # the local cluster was shut down
