"""Hostile names and paths (issue 15): experiment names MLflow or the file system refuse, an `--out` that cannot hold
the export, and no write outside `--out` and the store whatever the name, link or folder in the way."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from pipeline import cli, config, paths, runner, settings
from pipeline.errors import EXIT_OK, ConfigError
from pipeline.tracking import loading

from hostile import RUN, Hostile, both, csv, labelled, raw, run_case

DATA = csv("d.csv", labelled())
TRAIN = (*RUN, "--data", "d.csv", "--target", "label")
STORE_ONLY = ("mlruns",)
"""The export folder must stay as it was too: the case is refused before anything is exported."""


def named(id: str, name: str, *words: str) -> Hostile:
    """A run whose `--experiment` breaks a rule."""
    return Hostile(id, (*TRAIN, "--experiment", name), ("experiment name", *words), DATA, may_write=STORE_ONLY)


def derived(id: str, file: str, *words: str) -> Hostile:
    """A run with no `--experiment`, whose data file's stem breaks a rule."""
    return Hostile(
        id,
        (*RUN, "--data", file, "--target", "label"),
        ("taken from the data file's name", *words, "--experiment"),
        csv(file, labelled()),
        may_write=STORE_ONLY,
    )


def symlink(name: str, to: str) -> object:
    """Make the link `name` in the working folder pointing at `to` (relative to the link's folder)."""

    def run(work: Path) -> None:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(to, work / name)

    return run


TOML_REGISTER_OFF = "[deployment]\nregister = false\n[tracking]\nexperiment = {name}\n"

CASES = [
    # Class 1: one check of the experiment name (MLflow's registered-model rules and the file system's), before training.
    named("name-colon", "a:b", "has ':'", "pass --experiment a_b"),
    named("name-dotdot", "..", "starts with '..'", "pass --experiment experiment"),
    named("name-dot", ".", "is '.'", "must not be '.'"),
    named("name-dotdot-prefix", "..hidden", "starts with '..'", "pass --experiment hidden"),
    named("name-parent", "../x", "has '/'", "pass --experiment x"),
    named("name-grandparent", "../../x", "has '/'", "pass --experiment x"),
    named("name-absolute", "/abs/path", "has '/'", "pass --experiment abs_path"),
    named("name-backslash", "a\\b", "has '\\'", "pass --experiment a_b"),
    named("name-question-mark", "a?b", "has '?'", "pass --experiment a_b"),
    named("name-hash", "a#b", "has '#'", "pass --experiment a_b"),
    named("name-at", "a@b", "has '@'", "pass --experiment a_b"),
    named("name-300-characters", "n" * 300, "300 bytes long in UTF-8, over 255", f"pass --experiment {'n' * 64}"),
    named("name-130-two-byte-characters", "é" * 130, "260 bytes long in UTF-8, over 255"),
    named("name-only-spaces", "   ", "is only spaces", "pass --experiment experiment"),
    named("name-leading-space", " a", "starts or ends with a space", "pass --experiment a"),
    named("name-trailing-space", "a ", "starts or ends with a space", "pass --experiment a"),
    named("name-newline", "a\nb", "control characters", "pass --experiment a_b"),
    named("name-nul", "a\x00b", "control characters", "pass --experiment a_b"),
    named("name-escape-sequence", "a\x1b[31mb", "control characters"),
    named("name-undecodable-byte", "a\udcffb", "not UTF-8", "pass --experiment a_b"),
    named("name-many-rules-at-once", " ../a:b", "starts or ends with a space and has '/', ':'"),
    derived("derived-colon", "a:b.csv", "'a:b.csv'", "has ':'", "pass --experiment a_b"),
    derived("derived-dotdot", "...csv", "'...csv'", "starts with '..'"),
    derived("derived-newline", "a\nb.csv", "'a\\nb.csv'", "control characters"),
    derived("derived-question-mark", "why?.csv", "has '?'", "pass --experiment why"),
    Hostile(  # seen with registration off: the name was only a path, and wrote outside --out
        "config-register-off-grandparent",
        (*TRAIN, "--config", "c.toml"),
        ("experiment name '../../x' has '/'", "pass --experiment x"),
        both(DATA, raw("c.toml", TOML_REGISTER_OFF.format(name='"../../x"'))),
        may_write=STORE_ONLY,
    ),
    Hostile(
        "config-register-off-absolute",
        (*TRAIN, "--config", "c.toml"),
        ("experiment name '/tmp' has '/'",),
        both(DATA, raw("c.toml", TOML_REGISTER_OFF.format(name='"/tmp"'))),
        may_write=STORE_ONLY,
    ),
    # Class 2: an --out that cannot hold the export, refused before training.
    Hostile(
        "out-is-a-file",
        (*TRAIN, "--out", "f.txt"),
        ("--out f.txt is a file, not a folder",),
        both(DATA, raw("f.txt", "mine\n")),
    ),
    Hostile(
        "out-under-a-file",
        (*TRAIN, "--out", "f.txt/sub/dir"),
        ("--out f.txt/sub/dir lies under f.txt, which is a file",),
        both(DATA, raw("f.txt", "mine\n")),
    ),
    Hostile(
        "out-is-a-broken-link",
        (*TRAIN, "--out", "gone"),
        ("--out gone is a broken symbolic link",),
        both(DATA, symlink("gone", "nowhere")),
    ),
    Hostile(
        "out-under-proc", (*TRAIN, "--out", "/proc/crispml-out"), ("cannot make the folder /proc/crispml-out",), DATA
    ),
    Hostile("out-under-sys", (*TRAIN, "--out", "/sys/crispml/out"), ("cannot make the folder /sys/crispml",), DATA),
    Hostile(
        "out-under-a-proc-file",
        (*TRAIN, "--out", "/proc/self/status/x"),
        ("lies under /proc/self/status, which is a file",),
        DATA,
    ),
    Hostile(
        "out-experiment-folder-is-a-file",
        TRAIN,
        ("models/d, the folder of experiment 'd' under --out models, is a file",),
        both(DATA, raw("models/d", "mine\n")),
        may_write=STORE_ONLY,
    ),
    Hostile(
        "out-model-folder-is-a-file",
        TRAIN,
        ("models/d/model, where the model is exported, is a file",),
        both(DATA, raw("models/d/model", "mine\n")),
        may_write=STORE_ONLY,
    ),
    Hostile(  # an export replaces the folder: a folder the user made must never be
        "out-model-folder-is-not-an-export",
        TRAIN,
        ("models/d/model exists and is not a crispml export",),
        both(DATA, raw("models/d/model/precious.txt", "mine\n")),
        may_write=STORE_ONLY,
    ),
    # Class 3: whatever the name says, no write resolves outside --out (a link under --out that leads out of it).
    Hostile(
        "out-experiment-link-leads-outside",
        TRAIN,
        ("resolves to", "outside models"),
        both(DATA, symlink("models/d", "../../outside")),
        may_write=STORE_ONLY,
    ),
    Hostile(
        "out-model-link-leads-outside",
        TRAIN,
        ("resolves to", "outside models"),
        both(DATA, symlink("models/d/model", "../../../outside/model")),
        may_write=STORE_ONLY,
    ),
    # Class 4: a command that only reads (predict, serve) must not make an MLflow store where none is.
    Hostile(
        "predict-registry-uri-without-a-store",
        ("predict", "--model", "models:/d@champion", "--data", "d.csv", "--out", "o.csv"),
        ("no MLflow store at mlruns/mlflow.db", "--tracking-uri"),
        both(DATA, raw("mlruns/notes.txt", "mine\n")),
        may_write=(),
    ),
    Hostile(
        "predict-run-uri-with-a-store-elsewhere-missing",
        (
            "predict",
            "--model",
            "runs:/0123/model",
            "--data",
            "d.csv",
            "--out",
            "o.csv",
            "--tracking-uri",
            "sqlite:///s/x.db",
        ),
        ("no MLflow store at s/x.db",),
        both(DATA, raw("s/notes.txt", "mine\n")),
        may_write=(),
    ),
    Hostile(  # the check makes --out to prove it can; a run that fails later leaves no folder behind
        "out-probe-leaves-nothing",
        (*RUN, "--data", "d.csv", "--target", "nope", "--out", "new/deep"),
        ("column 'nope' named as target is not in",),
        DATA,
        may_write=STORE_ONLY,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_names(case, tmp_path, capsys, monkeypatch):
    err = run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)
    # Refused before any training: no candidate was cross-validated (the names are checked before the data is read).
    assert "cross-validating" not in err and "] modeling" not in err, err


@pytest.mark.parametrize("register", [True, False], ids=["registered", "register-off"])
def test_an_absolute_experiment_naming_a_users_model_folder_is_refused_and_the_folder_untouched(
    register, tmp_path, capsys, monkeypatch
):
    outside = tmp_path / "outside"  # the harness makes it, with a model/ folder of the user's own
    toml = TOML_REGISTER_OFF.format(name=json.dumps(str(outside))) if not register else ""
    args = (*TRAIN, "--experiment", str(outside)) if register else (*TRAIN, "--config", "c.toml")
    case = Hostile(
        "absolute",
        args,
        ("has '/'", f"pass --experiment {config.suggest_experiment_name(str(outside))}", "_outside"),
        both(DATA, raw("c.toml", toml)),
        may_write=STORE_ONLY,
    )
    run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)
    assert (outside / "model" / "precious.txt").read_text() == "the user's own model folder\n"


def test_serve_does_not_make_a_store_where_none_is(tmp_path, capsys, monkeypatch):
    with socket.socket() as sock:  # a port free now; the error comes before the server would bind it
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    args = ("serve", "--model", "models:/d@champion", "--tracking-uri", "sqlite:///s/x.db", "--port", port)
    case = Hostile("serve", args, ("no MLflow store at s/x.db",), raw("s/notes.txt", "mine\n"), may_write=())
    run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)


def test_the_export_target_is_checked_again_at_export_time(tmp_path, capsys, monkeypatch):
    """Defence in depth: with the name check switched off, the deployment's own check still refuses to write outside."""
    monkeypatch.setattr(config, "experiment_name_problem", lambda name, data_file=None: "")
    monkeypatch.setattr(runner, "check_outputs", lambda config: None)
    case = Hostile(
        "deploy-time",
        (*TRAIN, "--config", "c.toml"),
        ("export folder of experiment '../outside'", "resolves to", "outside models"),
        both(DATA, raw("c.toml", TOML_REGISTER_OFF.format(name='"../outside"'))),
    )
    run_case(case, tmp_path, None, cli.main, capsys, monkeypatch)


def test_an_odd_but_valid_name_and_an_absolute_out_whose_parents_are_missing_export_and_register(
    tmp_path, capsys, monkeypatch
):
    name = "Churn model é 1.0 (v2) & [test] 50%"
    out = tmp_path / "exports" / "deep"
    monkeypatch.chdir(tmp_path)
    DATA(tmp_path)
    code = cli.main([*TRAIN, "--experiment", name, "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    summary = json.loads(captured.out)
    assert Path(summary["export_path"]) == out / name / "model" and (out / name / "model" / "MLmodel").is_file()
    assert summary["registered_model_uri"] == f"models:/{name}@champion"
    loaded = loading.load_model(summary["registered_model_uri"], summary["tracking_uri"])
    assert loaded.model.predict(labelled().drop(columns="label")).shape == (60,)


@pytest.mark.parametrize(
    ("experiment", "ok"),
    [
        ("penguins", True),
        ("a b", True),
        ("a.b-c_d", True),
        ("模型", True),
        ("a%b", True),
        ("a@b", False),
        ("a#b", False),
        ("x" * 255, True),
        ("x" * 256, False),
        ("..", False),
        ("a/b", False),
        ("a:b", False),
        ("", False),
        ("a\tb", False),
    ],
)
def test_experiment_name_rule(experiment, ok):
    assert (config.experiment_name_problem(experiment) == "") is ok


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("a:b", "a_b"),
        ("..", "experiment"),
        ("../../x", "x"),
        ("/home/me/churn", "home_me_churn"),
        (" a ", "a"),
        ("a\nb", "a_b"),
        ("n" * 300, "n" * 64),
        ("/" + "d" * 100 + "/churn", "d" * 58 + "_churn"),
        ("?", "experiment"),
        ("\udcff", "experiment"),
        ("._ _.", "experiment"),
        ("a\\..\\b", "a_b"),
    ],
)
def test_the_suggested_name_is_valid_and_close(name, suggestion):
    assert config.suggest_experiment_name(name) == suggestion
    assert config.experiment_name_problem(suggestion) == ""


def test_an_explicit_name_overrides_a_bad_derived_one(tmp_path):
    """A data file named `a:b.csv` is fine when --experiment names the experiment."""
    setup = config.apply_overrides(
        settings.Config(), {"data.path": str(tmp_path / "a:b.csv"), "deployment.out": str(tmp_path / "m")}
    )
    with pytest.raises(ConfigError, match="taken from the data file's name 'a:b.csv'"):
        config.check_outputs(setup)
    named_ = config.apply_overrides(setup, {"tracking.experiment": "churn"})
    assert config.check_outputs(named_) == tmp_path / "m" / "churn" / "model"
    assert not (tmp_path / "m").exists()  # proven writable, then removed


@pytest.mark.parametrize("experiment", ["../x", "../../x", "/abs/x", "..", "x/../../y"])
def test_export_target_refuses_names_that_lead_out(tmp_path, experiment):
    with pytest.raises(ConfigError, match="outside"):
        paths.export_target(tmp_path / "out", experiment)


def test_export_target_follows_links_and_accepts_an_out_that_is_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")  # --out itself may be a link: the user chose it
    assert paths.export_target(tmp_path / "out", "x") == tmp_path / "out" / "x" / "model"
    (tmp_path / "real" / "x").symlink_to(tmp_path)  # a link under --out that leads out of it is not
    with pytest.raises(ConfigError, match="outside"):
        paths.export_target(tmp_path / "out", "x")


def test_check_replaceable_accepts_nothing_or_an_export(tmp_path):
    target = tmp_path / "model"
    paths.check_replaceable(target)  # nothing there
    target.mkdir()
    with pytest.raises(ConfigError, match="not a crispml export"):
        paths.check_replaceable(target)
    (target / paths.EXPORT_MARKER).write_text("{}")
    paths.check_replaceable(target)
