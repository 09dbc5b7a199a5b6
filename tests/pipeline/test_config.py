import dataclasses
from pathlib import Path

import pytest

from pipeline.config import apply_overrides, load_config
from pipeline.errors import ConfigError
from pipeline.settings import Config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crispml.toml"
    path.write_text(text)
    return path


def test_a_file_sets_fields_and_keeps_other_defaults(tmp_path):
    config = load_config(
        write(tmp_path, 'seed = 7\n[business]\ntarget = "y"\nmetric = "rmse"\n[modeling]\nmodels = ["linear", "svm"]\nfolds = 3\n')
    )
    assert config.seed == 7 and config.business.target == "y" and config.business.metric == "rmse"
    assert config.modeling.models == ("linear", "svm") and config.modeling.folds == 3
    assert config.modeling.n_jobs == -1 and config.preparation.holdout == 0.2


def test_the_readme_example_config_loads(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = load_config(write(tmp_path, example))
    assert config.data.path == Path("data/penguins.csv")  # relative to the working directory
    assert dataclasses.replace(config, data=Config().data) == Config()


def test_flags_override_the_file(tmp_path):
    config = load_config(write(tmp_path, "[modeling]\nfolds = 3\n"))
    config = apply_overrides(config, {"modeling.folds": 4, "seed": 1, "business.task": None})
    assert config.modeling.folds == 4 and config.seed == 1 and config.business.task == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[modeling]\nfold = 3\n", r"unknown key 'fold' in \[modeling\] .*; did you mean 'folds'\?"),
        ("[modelling]\nfolds = 3\n", r"unknown section 'modelling' .*; did you mean 'modeling'\?"),
        ('[modeling]\nfolds = "five"\n', r"modeling.folds must be int, got str 'five'"),
        ('[modeling]\nmodels = ["svm", "xgboost"]\n', r"unknown model 'xgboost'"),
        ('[modeling]\nmodels = ["random_forrest"]\n', r"did you mean 'random_forest'\?"),
        ('[business]\nmetric = "acuracy"\n', r"business.metric 'acuracy' is unknown; did you mean 'accuracy'\?"),
        ('[business]\ntask = "regression"\nmetric = "roc_auc"\n', r"'roc_auc' does not fit a regression task; use one of r2, rmse, mae"),
        ("[preparation]\nholdout = 1.5\n", r"preparation.holdout must be between 0 and 1"),
        ("[modeling]\nfolds = 1\n", r"modeling.folds must be at least 2"),
        ("[modeling]\nfolds = true\n", r"modeling.folds must be int, got bool"),
        ("seed = 1\n[modeling\n", r"is not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[modeling]\nfolds = 1\nn_jobs = 0\n[preparation]\nholdout = 2.0\n"))
    text = str(err.value)
    assert "folds" in text and "n_jobs" in text and "holdout" in text
    assert "\n" not in text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.toml does not exist"):
        load_config(tmp_path / "nope.toml")


def test_business_criteria_and_evaluation_settings_load(tmp_path):
    config = load_config(
        write(
            tmp_path,
            '[business]\nobjective = "Sort penguins"\nmin_score = 1\nmin_margin_over_baseline = 0.1\nmax_model_mb = 5\n'
            '[evaluation]\nselection = "best_mean"\nalpha = 0.1\ntolerance = 0.01\nrelative_tolerance = 0\n',
        )
    )
    b = config.business
    assert b.objective == "Sort penguins" and b.min_score == 1.0 and isinstance(b.min_score, float)
    assert b.min_margin_over_baseline == 0.1 and b.max_model_mb == 5.0 and b.max_latency_ms_per_row is None
    e = config.evaluation
    assert e.selection == "best_mean" and e.alpha == 0.1 and e.tolerance == 0.01
    assert e.relative_tolerance == 0.0 and isinstance(e.relative_tolerance, float)
    defaults = Config()
    assert defaults.business.min_score is None and defaults.evaluation.selection == "simplest_equivalent"
    assert defaults.evaluation.tolerance == 0.005 and defaults.evaluation.relative_tolerance == 0.01
    # The old rule's name still loads; it now stands for simplest_equivalent (see stages.evaluation).
    old = load_config(write(tmp_path, '[evaluation]\nselection = "simplest_within_noise"\n'))
    assert old.evaluation.selection == "simplest_within_noise"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[evaluation]\nselection = "simplest_equivalnt"\n', r"evaluation.selection 'simplest_equivalnt' is unknown; did you mean 'simplest_equivalent'\?; use simplest_equivalent or best_mean"),
        ("[evaluation]\ntolerance = -0.01\n", r"evaluation.tolerance must be a finite number of 0 or more \(the largest loss a simpler model may cost, in the metric's units, e.g. 0.005\), got -0.01"),
        ("[evaluation]\ntolerance = inf\n", r"evaluation.tolerance must be a finite number of 0 or more .*, got inf"),
        ("[evaluation]\nrelative_tolerance = 1.5\n", r"evaluation.relative_tolerance must be at least 0 and below 1 \(a share of the top model's score, e.g. 0.01 for 1%\), got 1.5"),
        ("[evaluation]\nrelative_tolerance = nan\n", r"evaluation.relative_tolerance must be at least 0 and below 1 .*, got nan"),
        ('[evaluation]\ntolerance = "small"\n', r"evaluation.tolerance must be float, got str 'small'"),
        ("[evaluation]\nalpha = 0.0\n", r"evaluation.alpha must be between 0 and 1"),
        ("[evaluation]\nholdout_tolerance_sd = -1.0\n", r"evaluation.holdout_tolerance_sd must be positive"),
        ('[business]\nmin_score = "high"\n', r"business.min_score must be float \(leave the key out for none\), got str 'high'"),
        ('[business]\nmetric = "balanced_accuracy"\nmin_score = 85\n', r"min_score 85 is impossible for balanced_accuracy, whose scores are between 0 and 1"),
        ('[business]\nmetric = "rmse"\nmin_score = -3.0\n', r"min_score -3 is impossible for rmse, whose scores are at least 0"),
        ('[business]\nmetric = "r2"\nmin_score = 1.5\n', r"min_score 1.5 is impossible for r2, whose scores are at most 1"),
        ("[business]\nmin_margin_over_baseline = -0.1\n", r"min_margin_over_baseline must be 0 or more"),
        ("[business]\nmax_latency_ms_per_row = 0\n", r"business.max_latency_ms_per_row must be a positive number"),
        ("[business]\nmin_scor = 0.8\n", r"unknown key 'min_scor' in \[business\] .*; did you mean 'min_score'\?"),
    ],
)
def test_bad_business_criteria_and_evaluation_settings(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
