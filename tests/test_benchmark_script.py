"""The pure helpers of benchmarks/run_benchmark.py: generated data, memory sampling, the results table.

No timing: the benchmark's numbers come from `run_benchmark.py` itself on an idle machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import ModelingConfig
from stages.model_registry import MODELS

from conftest import benchmark_script

rb = benchmark_script()


def test_plain_loop_fits_crispmls_default_candidates():
    # plain_loop.py iterates MODELS; crispml's default candidate list must be the same names.
    assert ModelingConfig().models == tuple(MODELS)
    assert "gradient_boosting" in MODELS


def test_wide_table_is_seeded_and_its_signal_columns_stand_out():
    frame = rb.make_wide(300, 3000, seed=0)
    assert frame.shape == (300, 3001)
    assert frame.equals(rb.make_wide(300, 3000, seed=0))
    assert not frame.equals(rb.make_wide(300, 3000, seed=1))
    y = (frame.pop("y") == "yes").astype(float)
    assert 0.3 < y.mean() < 0.7
    strongest = set(frame.corrwith(y).abs().nlargest(3).index)
    assert strongest == {"x11", "x737", "x1500"}  # the three largest weights of WIDE_SIGNAL


def test_pss_is_read_from_smaps_rollup():
    text = "55-7f ---p 00000000 00:00 0  [rollup]\nRss:  1704 kB\nPss:   293 kB\nPss_Anon:  112 kB\n"
    assert rb.pss_bytes(text) == 293 * 1024
    assert rb.pss_bytes("Rss: 10 kB\n") == 0
    own = rb.pss_bytes(Path(f"/proc/{os.getpid()}/smaps_rollup").read_text())
    assert 0 < own < 2**40


def test_session_pids_include_a_workers_child():
    # A parent that starts a child, prints its pid and waits: both are in the parent's new session.
    code = "import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', 'input()'], stdin=subprocess.PIPE); print(c.pid, flush=True); input(); c.kill()"
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        pids = rb.session_pids(parent.pid)
        assert parent.pid in pids and child in pids
        assert os.getpid() not in pids
    finally:
        parent.communicate("\n", timeout=60)


def _crispml(chosen: str, statuses: dict[str, str], score: float = 0.9) -> rb.Measure:
    board = [{"model": m, "status": s, "mean": {"roc_auc": score if m == chosen else 0.5}} for m, s in statuses.items()]
    return rb.Measure(10.0, 300 * 2**20, {"chosen_model": chosen, "metric": "roc_auc", "leaderboard": board})


def _plain(seconds: float = 5.0) -> rb.Measure:
    output = {"chosen_model": "svm", "metric": "roc_auc_ovr", "cv": 0.91, "candidates": ["linear", "svm"]}
    return rb.Measure(seconds, 200 * 2**20, output)


def test_a_row_reports_choices_racing_and_ratios():
    race = rb.summarise_arm([_crispml("svm", {"linear": "raced_out", "svm": "ok"})] * 3)
    no_race = rb.summarise_arm([_crispml("linear", {"linear": "ok", "svm": "ok"})] * 3)
    plain = rb.summarise_arm([_plain(4.0), _plain(5.0), _plain(100.0)])
    assert plain.seconds == 5.0 and race.raced_out == (1,) and no_race.raced_out == (0,)
    assert rb.same_choice(race, no_race) == "no"
    assert rb.same_choice(race, race) == "yes"
    line = rb.table_row("wide", 300, 3000, 3, {rb.PLAIN: plain, rb.RACE: race, rb.NO_RACE: no_race}, "abc1234")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == len(rb.HEADER)
    row = dict(zip(rb.HEADER, cells))
    assert row["(b)/(a)"] == "2.00" and row["(a) PSS MiB"] == "200" and row["(b) PSS MiB"] == "300"
    assert row["(b) chose"] == "svm (roc_auc 0.9000)" and row["(a) chose"] == "svm (roc_auc_ovr 0.9100)"
    assert row["(b) = (c)"] == "no" and row["(b) raced out"] == "1" and row["commit"] == "abc1234"


def test_a_stopped_loop_bounds_the_ratio_and_a_split_choice_is_not_the_same():
    stopped = rb.summarise_arm([rb.Measure(900.0, 2**30, {}, stopped=True)])
    mixed = rb.summarise_arm([_crispml("svm", {"svm": "ok"}), _crispml("linear", {"linear": "ok"})])
    assert stopped.seconds is None and stopped.chosen == ()
    assert rb._ratio(mixed, stopped) == "<0.01"
    assert rb._seconds(stopped) == ">900 (stopped)"
    assert rb.same_choice(mixed, mixed) == "no"  # the repeats themselves disagreed
    assert rb.same_choice(stopped, mixed) == "-"


def test_merge_keeps_other_data_sets_rows_of_this_format_only(capsys):
    arms = {arm: rb.summarise_arm([_plain()] if arm == rb.PLAIN else [_crispml("svm", {"svm": "ok"})]) for arm in rb.ARMS}
    new = {name: rb.table_row(name, 10, 2, 1, arms, "c1") for name in ("penguins", "wide")}
    old_format = "| bikeshare | 8,645 | 3 | 30.3 | 35.0 | 1.15 | 871 | 1276 | rf | rf | 66a90f4 |"
    text = rb.results_text({**new}, ["--datasets", "penguins,wide"], False, 0.2) + old_format + "\n"
    kept = rb.kept_rows(text, ["wide"])
    assert kept == {"penguins": new["penguins"]}
    assert "bikeshare" in capsys.readouterr().err
    assert "`python benchmarks/run_benchmark.py --datasets penguins,wide`" in text


@pytest.mark.parametrize("repeat", range(4))
def test_each_repeat_runs_every_arm_once_in_rotated_order(repeat):
    order = rb.turn_order(repeat)
    assert sorted(order) == sorted(rb.ARMS)
    assert order[0] == rb.ARMS[repeat % 3]


def test_only_the_no_race_command_turns_racing_off(tmp_path):
    ds = rb.DATASETS["penguins"]
    cmds = rb.commands(ds, tmp_path / "p.csv", tmp_path, ["--folds", "3"])
    assert "--no-race" in cmds[rb.NO_RACE] and "--no-race" not in cmds[rb.RACE]
    assert cmds[rb.NO_RACE][: len(cmds[rb.RACE])] == cmds[rb.RACE]
    assert str(tmp_path / "mlruns" / "mlflow.db") in " ".join(cmds[rb.RACE])
    assert cmds[rb.PLAIN][1].endswith("plain_loop.py")
