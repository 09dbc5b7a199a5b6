"""Deployment's own rules (`pipeline.deploying`): the pinned requirements, the time budget's warning, the paths a card shows."""

from __future__ import annotations

import time

import pytest

from pipeline import deploying
from pipeline.phases import WARNING
from pipeline.settings import Config

from conftest import replace


def test_the_model_pins_every_package_it_was_trained_with_but_python_and_unknown_versions():
    packages = {"python": "3.11.7", "scikit-learn": "1.9.1", "numpy": "unknown", "pandas": "3.1.1"}
    assert deploying._requirements(packages) == ["scikit-learn==1.9.1", "pandas==3.1.1"]


@pytest.mark.parametrize(("budget", "spent"), [(0.0, 100.0), (600.0, 1.0)], ids=["no budget", "within it"])
def test_a_run_within_its_time_budget_has_no_warning(budget, spent):
    seen = []
    config = replace(Config(), modeling={"time_budget": budget})
    assert deploying._budget_tags(config, time.monotonic() - spent, "linear", lambda *args: seen.append(args)) == {}
    assert seen == []


def test_a_run_over_its_time_budget_warns_and_records_it_in_a_tag():
    seen = []
    config = replace(Config(), modeling={"time_budget": 2.0})
    tags = deploying._budget_tags(config, time.monotonic() - 30.0, "linear", lambda *args: seen.append(args))
    assert list(tags) == ["crispml.budget_warning"]
    assert tags["crispml.budget_warning"].startswith("the run took 3") and tags["crispml.budget_warning"].endswith("over its time budget of 2 s")
    ((stage, message),) = seen
    assert stage == WARNING and message.startswith(tags["crispml.budget_warning"]) and "refitting and exporting linear" in message


def test_the_card_shows_the_export_relative_to_the_folder_the_run_started_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert deploying._shown(tmp_path / "models" / "churn" / "model") == "models/churn/model"
    assert deploying._shown(tmp_path.parent / "elsewhere") == "../elsewhere"
