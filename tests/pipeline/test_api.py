"""The Python API (`import crispml`): a DataFrame or a file in, a `Result` out, from a notebook or a script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline

import crispml
from pipeline.api import KEYWORDS, checked_frame, frame_sha256
from pipeline.errors import ConfigError, DataError, UsageError
from pipeline.settings import DEFAULT_DATA

from conftest import REPO, sqlite_uri

QUICK = {"models": ["baseline", "linear"], "folds": 3, "n_jobs": 2, "verbose": False}


@pytest.fixture(scope="module")
def on_a_frame(tmp_path_factory: pytest.TempPathFactory) -> tuple[crispml.Result, pd.DataFrame, pd.DataFrame, Path]:
    """One run on the penguins as a DataFrame, and the frame before and after."""
    tmp = tmp_path_factory.mktemp("api")
    frame = pd.read_csv(DEFAULT_DATA)
    before = frame.copy()
    result = crispml.run(frame, target="species", tracking_uri=sqlite_uri(tmp / "mlruns"), out=tmp / "models", **QUICK)
    return result, frame, before, tmp


@pytest.mark.slow
def test_a_run_on_a_dataframe_returns_the_leaderboard_the_fitted_model_and_where_it_went(on_a_frame):
    result, frame, before, tmp = on_a_frame
    pd.testing.assert_frame_equal(frame, before)  # the user's frame is not changed
    assert isinstance(result.leaderboard, pd.DataFrame)
    assert result.leaderboard["model"].tolist()[:2] == ["linear", "baseline"]
    assert result.leaderboard.loc[result.leaderboard["chosen"], "model"].tolist() == [result.chosen] == ["linear"]
    assert isinstance(result.model, Pipeline) and result.go and result.decision.go
    assert result.selection.chosen == "linear" and result.evaluation.model == "linear"
    assert result.experiment == "species"  # a DataFrame's experiment is named after its target
    assert result.registered == "models:/species@champion"
    assert result.export_dir == tmp / "models" / "species" / "model" and (result.export_dir / "MLmodel").is_file()
    run = MlflowClient(result.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert "crispml.Result 'linear' chosen" in repr(result)

    features = frame.drop(columns="species")
    scored = crispml.predict(result, features)
    assert list(scored.columns) == [*features.columns, "prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]
    assert (scored["prediction"].to_numpy() == result.model.predict(features)).all()
    by_uri = crispml.predict(result.registered, features.head(5), tracking_uri=result.tracking_uri)
    by_folder = crispml.predict(result.export_dir, features.head(5))
    pd.testing.assert_frame_equal(by_uri, scored.head(5))
    pd.testing.assert_frame_equal(by_folder, scored.head(5))
    some = frame[frame["island"] == "Dream"].drop(columns="species")  # a filtered frame keeps its labels
    subset = crispml.predict(result, some)
    assert subset.index.equals(some.index) and (subset["prediction"] == scored.loc[some.index, "prediction"]).all()


@pytest.mark.slow
def test_a_run_on_a_file_takes_its_stem_as_the_experiment_and_options_override_the_config(tmp_path):
    data = tmp_path / "birds.csv"
    shutil.copy(DEFAULT_DATA, data)
    config = tmp_path / "crispml.toml"
    config.write_text('[business]\ntarget = "species"\n[modeling]\nfolds = 5\n')
    result = crispml.run(
        data, config=config, tracking_uri=sqlite_uri(tmp_path / "mlruns"), out=str(tmp_path / "m"), register=False, **QUICK
    )
    assert result.experiment == "birds" and result.registered == ""
    assert result.export_dir == tmp_path / "m" / "birds" / "model"
    params = MlflowClient(result.tracking_uri).get_run(result.run_id).data.params
    assert params["modeling.folds"] == "3"  # the keyword beat the file


def test_bad_options_and_bad_data_are_one_line_errors_before_any_work(tmp_path):
    with pytest.raises(UsageError, match=r"unknown option 'fold'.*did you mean 'folds'"):
        crispml.run(DEFAULT_DATA, target="species", fold=3)
    with pytest.raises(UsageError, match="a file path or a pandas DataFrame, not list"):
        crispml.run([[1, 2]], target="a")
    with pytest.raises(ConfigError, match="folds"):
        crispml.run(DEFAULT_DATA, target="species", folds="three", out=tmp_path)
    with pytest.raises(DataError, match="duplicate column names: 1"):
        crispml.run(pd.DataFrame({1: [1, 2], "1": [3, 4]}), target="1", out=tmp_path)
    with pytest.raises(DataError, match="MultiIndex"):
        crispml.run(pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "b"), ("a", "c")])), target="a")
    with pytest.raises(DataError, match="0 rows"):
        crispml.run(pd.DataFrame({"a": []}), target="a")
    with pytest.raises(DataError, match="column 'nope' named as target is not in a pandas DataFrame"):
        crispml.run(pd.read_csv(DEFAULT_DATA), target="nope", out=tmp_path, tracking_uri=sqlite_uri(tmp_path))
    with pytest.raises(DataError, match=r"column '5' named as target is not in a pandas DataFrame \(columns: 0, 1\)"):
        crispml.run(pd.DataFrame({0: [1, 2], 1: [3, 4]}), target=5, out=tmp_path, tracking_uri=sqlite_uri(tmp_path))
    assert not (tmp_path / "mlflow.db").exists()  # bad data: the store is not touched
    assert issubclass(UsageError, crispml.CrispmlError) and issubclass(DataError, crispml.CrispmlError)


def test_every_config_field_is_a_keyword_by_its_own_name():
    assert KEYWORDS["folds"] == "modeling.folds" and KEYWORDS["experiment"] == "tracking.experiment"
    assert KEYWORDS["tracking_uri"] == "tracking.uri" and KEYWORDS["seed"] == "seed"
    assert "path" not in KEYWORDS and "uri" not in KEYWORDS


def test_a_dataframe_is_read_as_a_file_would_be():
    frame = pd.DataFrame({0: [b"x", b"y"], "b": [1.0, 2.0]}, index=[10, 10])
    checked = checked_frame(frame)
    assert list(checked.columns) == ["0", "b"] and list(checked.index) == [0, 1]
    assert checked["0"].tolist() == ["x", "y"]  # UTF-8 bytes as text, as from Parquet
    assert list(frame.columns) == [0, "b"] and frame[0].tolist() == [b"x", b"y"]  # the user's frame is unchanged
    same = pd.DataFrame({"0": ["x", "y"], "b": [1.0, 2.0]})
    assert frame_sha256(same) == frame_sha256(same.copy())
    assert frame_sha256(same) != frame_sha256(same.assign(b=[1.0, 2.5]))
    assert frame_sha256(same) != frame_sha256(same.rename(columns={"b": "c"}))
    nested = pd.DataFrame({"a": [[1], [2]]})
    assert len(frame_sha256(nested)) == 64


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs(tmp_path):
    """The worker processes do not import the user's script again, so an unguarded call works."""
    shutil.copy(DEFAULT_DATA, tmp_path / "penguins.csv")
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import crispml
            print("script body ran")
            result = crispml.run("penguins.csv", target="species", models=["baseline", "linear"], folds=3,
                                 register=False, verbose=False)
            print("CHOSEN", result.chosen)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script body ran") == 1 and "CHOSEN linear" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def readme_python_cells() -> list[str]:
    """The code blocks of the README's Python section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python: `import crispml`", 1)[1].split("\n## ", 1)[0]
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", section, flags=re.S)]


@pytest.mark.slow
def test_the_readmes_python_example_runs_as_a_jupyter_notebook(tmp_path):
    """The README's example, cell by cell, in a real Jupyter kernel (nbclient), in a fresh folder."""
    import nbformat
    from nbclient import NotebookClient

    cells = readme_python_cells()
    assert len(cells) == 2 and "crispml.run(" in cells[0] and "crispml.predict(" in cells[1]
    (tmp_path / "data").mkdir()
    shutil.copy(DEFAULT_DATA, tmp_path / "data" / "penguins.csv")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "<crispml.Result" in shown and "balanced_accuracy_mean" in shown and "proba_Adelie" in shown, shown
    assert (tmp_path / "mlruns" / "mlflow.db").is_file() and (tmp_path / "models" / "species" / "model").is_dir()
    scored = notebook.cells[1].outputs[-1]["data"]["text/plain"]
    assert np.isin(["Adelie", "Gentoo", "Chinstrap"], scored.split()).any()
