"""What the phases hand each other (`pipeline.phases`): frozen values, and the progress stages the command line knows."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from pipeline import cli, phases


def test_a_table_keeps_its_rows_source_and_hash_and_cannot_be_changed():
    frame = pd.DataFrame({"x": [1, 2]})
    table = phases.Table(frame, "data/x.csv", "ab" * 32)
    assert table.frame is frame and table.source == "data/x.csv" and table.sha256 == "ab" * 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.source = "elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize("value", [phases.Table, phases.Prepared, phases.Assessed])
def test_every_value_passed_between_phases_is_a_frozen_dataclass(value):
    assert dataclasses.is_dataclass(value) and value.__dataclass_params__.frozen


def test_the_prepared_data_and_the_assessed_model_carry_what_the_later_phases_read():
    prepared = {f.name for f in dataclasses.fields(phases.Prepared)}
    assert {"profile", "metric", "X", "y", "split", "folds", "candidates", "labelled"} <= prepared
    assessed = {f.name for f in dataclasses.fields(phases.Assessed)}
    assert {"chosen", "result", "final", "footprint", "decision", "plots"} <= assessed


def test_the_command_line_knows_the_stages_the_runner_reports_warnings_and_fits_under():
    assert (phases.WARNING, phases.FIT) == (cli.WARNING, cli.FIT)  # cli.py defines its own copies of both
    assert phases.WARNING != phases.FIT
