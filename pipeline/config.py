"""Configuration: one TOML file, read into a tree of frozen dataclasses, validated once.

Every default lives in the dataclasses of `pipeline.settings`. A config file sets any subset
of fields, one table per section (`[data]`, `[business]`, ...). Command-line flags override
fields of the same tree through `apply_overrides`. `validate` checks the whole tree once, and
names every problem with its fix.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import tomllib
import types
import typing
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import backends, paths
from pipeline.errors import ConfigError, did_you_mean
from pipeline.files import file_problem
from pipeline.settings import BusinessConfig, Config, EvaluationConfig
from stages.metrics import DEFAULT_RELATIVE_TOLERANCE, DEFAULT_TOLERANCE, METRICS
from stages.model_registry import MODELS
from stages.selection import DEPRECATED_RULES, SELECTION_RULES
from stages.understanding import TASKS

MAX_CONFIG_BYTES = 1 << 20
"""A config file is a few lines of TOML; a larger file is the wrong file (and is not read whole)."""
MEMORY_MB_MAX = 2**43 - 1
"""The largest `candidate_memory_mb`: just under 2**63 bytes, the largest address-space limit (`RLIMIT_AS`)."""
SEED_MAX = 2**32 - 1
"""The largest seed: numpy's and scikit-learn's `random_state` take 0 to 2**32 - 1."""
EXPERIMENT_NAME_MAX_BYTES = 255
"""The longest experiment name, in UTF-8 bytes: it is a folder name under `--out` (`NAME_MAX`)."""
EXPERIMENT_NAME_RULE = (
    "an experiment name is also the registered model's name, part of its models:/<name>@champion URI and a folder "
    f"name under --out, so it must be 1 to {EXPERIMENT_NAME_MAX_BYTES} bytes in UTF-8, without '/', '\\', ':', '?', "
    "'#', '@' or control characters, without a space at either end, and must not be '.' or start with '..'"
)
_FORBIDDEN = {"/": "'/'", "\\": "'\\'", ":": "':'", "?": "'?'", "#": "'#'", "@": "'@'"}


SECTIONS: dict[str, type] = {name: hint for name, hint in typing.get_type_hints(Config).items() if name != "seed"}


def load_config(path: Path | None) -> Config:
    """Read a TOML config file into a validated `Config`; `None` gives the defaults.

    Args:
        path: The TOML file, or None.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing or unreadable, or has unknown keys or bad values
            (every problem is listed in one message).
    """
    if path is None:
        return validate(Config())
    return validate(config_from_mapping(read_toml(Path(path)), source=str(path)))


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file: UTF-8, with or without a byte-order mark.

    Nothing but a regular file is opened, so a named pipe or a device cannot hang the read.

    Args:
        path: The file named by `--config`.

    Returns:
        Its tables and keys.

    Raises:
        ConfigError: The file is missing, not a regular file, unreadable, too large to be a
            config, not UTF-8, or not valid TOML.
    """
    problem = file_problem(path, "--config")
    if problem.startswith("does not exist;"):
        raise ConfigError(f"config file {path} {problem.replace('an existing file', 'an existing TOML file')}")
    if problem:
        raise ConfigError(f"config file {path} {problem}")
    try:
        with open(path, "rb") as fh:
            content = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror or exc}); check its permissions") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB, which no crispml config is; "
            "pass the TOML config file with --config"
        )
    try:
        text = content.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the TOML
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 (byte {content[exc.start]:#x} at offset {exc.start}); re-save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}; fix the syntax") from None


def config_from_mapping(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Build a `Config` from nested plain values (as read from TOML).

    Args:
        raw: `{"seed": 1, "modeling": {"folds": 3}, ...}`.
        source: Where the values came from, for error messages.

    Returns:
        The configuration (not yet checked for cross-field problems; see `validate`).

    Raises:
        ConfigError: Unknown sections or keys, or values of the wrong type.
    """
    problems: list[str] = []
    sections: dict[str, Any] = {}
    known = ["seed", *SECTIONS]
    for key, value in raw.items():
        if key == "seed":
            sections["seed"] = _coerce(value, int, "seed", problems)
        elif key not in SECTIONS:
            problems.append(f"unknown section '{key}' in {source}{did_you_mean(key, known)} (sections: {', '.join(known)})")
        elif not isinstance(value, Mapping):
            problems.append(f"'{key}' in {source} must be a table ([{key}]), got {type(value).__name__}")
        else:
            sections[key] = _section_from_mapping(SECTIONS[key], key, value, source, problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(**sections)


def _section_from_mapping(cls: type, name: str, raw: Mapping[str, Any], source: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            problems.append(
                f"unknown key '{key}' in [{name}] of {source}{did_you_mean(key, hints)} (keys: {', '.join(hints)})"
            )
            continue
        values[key] = _coerce(value, hints[key], f"{name}.{key}", problems)
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str, problems: list[str]) -> Any:
    """Check a plain value against a field's type; convert lists to tuples and str to Path."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, (list, tuple)) or not all(_is(v, item) for v in value):
            problems.append(f"{where} must be a list of {item.__name__}, got {value!r}")
            return None
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        if any(_is(value, a) for a in typing.get_args(hint)):
            return float(value) if float in typing.get_args(hint) and _is(value, float) else value
        names = " or ".join(a.__name__ for a in typing.get_args(hint) if a is not type(None))
        problems.append(f"{where} must be {names} (leave the key out for none), got {type(value).__name__} {value!r}")
        return None
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        problems.append(f"{where} must be a path (a string), got {value!r}")
        return None
    if _is(value, hint):
        return float(value) if hint is float else value
    problems.append(f"{where} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return None


def _is(value: Any, hint: type) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Return a copy of `config` with dotted fields replaced, then validated.

    Args:
        config: The loaded configuration.
        overrides: `{"modeling.folds": 3, "seed": 7}`; None values are skipped.

    Returns:
        The new, validated configuration.

    Raises:
        ConfigError: An override names an unknown field or gives a bad value.
    """
    raw: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        if "." not in dotted:
            raw[dotted] = value
            continue
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    patch = config_from_mapping(raw, source="the command line")
    merged: dict[str, Any] = {}
    for name in raw:
        if name == "seed":
            merged["seed"] = patch.seed
        else:
            fields = {k: getattr(getattr(patch, name), k) for k in raw[name]}
            merged[name] = dataclasses.replace(getattr(config, name), **fields)
    return validate(dataclasses.replace(config, **merged))


def validate(config: Config) -> Config:
    """Check the values of a configuration against each other and the registries.

    Args:
        config: The configuration to check.

    Returns:
        The same configuration, when it is valid.

    Raises:
        ConfigError: Listing every problem found.
    """
    problems: list[str] = []
    b, p, m = config.business, config.preparation, config.modeling
    if not 0 <= config.seed <= SEED_MAX:
        problems.append(f"seed must be between 0 and {SEED_MAX} (2**32 - 1, numpy's range), got {config.seed}")
    if b.task not in ("auto", *TASKS):
        problems.append(f"business.task '{b.task}' is unknown{did_you_mean(b.task, TASKS)}; use auto, {', '.join(TASKS)}")
    if b.metric and b.metric not in METRICS:
        problems.append(f"business.metric '{b.metric}' is unknown{did_you_mean(b.metric, METRICS)} (metrics: {', '.join(METRICS)})")
    elif b.metric and b.task in TASKS and b.task not in METRICS[b.metric].tasks:
        fitting = [n for n, mt in METRICS.items() if b.task in mt.tasks]
        problems.append(f"business.metric '{b.metric}' does not fit a {b.task} task; use one of {', '.join(fitting)}")
    if not b.target:
        problems.append("business.target is empty; name the column to predict with --target COL")
    if not 0.0 < p.holdout < 1.0:
        problems.append(f"preparation.holdout must be between 0 and 1 (a share of rows, e.g. 0.2), got {p.holdout}")
    if not 0.0 <= p.rare_category_share < 1.0:
        problems.append(f"preparation.rare_category_share must be in [0, 1), got {p.rare_category_share}")
    if p.max_categories < 2:
        problems.append(f"preparation.max_categories must be at least 2, got {p.max_categories}")
    unknown = [n for n in m.models if n not in MODELS]
    for name in unknown:
        problems.append(f"unknown model '{name}'{did_you_mean(name, MODELS)} (models: {', '.join(MODELS)})")
    if not m.models:
        problems.append(f"modeling.models is empty; name at least one of {', '.join(MODELS)}")
    if len(set(m.models)) != len(m.models):
        problems.append(f"modeling.models names a model twice: {', '.join(m.models)}")
    if m.folds < 2:
        problems.append(f"modeling.folds must be at least 2, got {m.folds}")
    problems += _business_problems(b)
    problems += _evaluation_problems(config.evaluation)
    if m.n_jobs == 0:
        problems.append("modeling.n_jobs must not be 0; use -1 for every core or a positive count")
    if not (math.isfinite(m.candidate_timeout) and m.candidate_timeout >= 0):
        problems.append(f"modeling.candidate_timeout must be 0 (no limit) or a number of seconds, got {m.candidate_timeout}")
    if not 0 <= m.candidate_memory_mb <= MEMORY_MB_MAX:
        problems.append(
            f"modeling.candidate_memory_mb must be 0 (automatic) or a number of MiB up to {MEMORY_MB_MAX} "
            f"(2**43 - 1: the largest memory limit a process can have is 2**63 bytes), got {m.candidate_memory_mb}"
        )
    if not (math.isfinite(m.time_budget) and m.time_budget >= 0):
        problems.append(f"modeling.time_budget must be 0 (no budget) or a number of seconds, got {m.time_budget}")
    if m.backend not in backends.names():
        known = backends.names()
        problems.append(f"modeling.backend '{m.backend}' is unknown{did_you_mean(m.backend, known)}; use {' or '.join(known)}")
    elif m.scheduler and m.backend != "dask":
        problems.append(f"modeling.scheduler '{m.scheduler}' needs backend 'dask'; add --backend dask or drop the scheduler")
    if not m.mlp_hidden_layers or any(u < 1 for u in m.mlp_hidden_layers):
        problems.append(f"modeling.mlp_hidden_layers must be positive unit counts, got {list(m.mlp_hidden_layers)}")
    if config.tracking.experiment:  # a name derived from the data file is checked by `check_outputs`
        problems += [p for p in [experiment_name_problem(config.tracking.experiment)] if p]
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def experiment_name_problem(name: str, data_file: Path | None = None) -> str:
    """Check an experiment name against MLflow's rules for registered model names and the file system's.

    The name is the MLflow experiment's, the registered model's (MLflow refuses `/`, `:`,
    `.` and names starting with `..`), and a folder under `--out` (no `/`, `\\` or NUL, at
    most 255 bytes). `?` and `#` are refused because MLflow cannot load
    `models:/<name>@champion` with them, `@` because `models:/<name>/<version>` then fails,
    and control characters and spaces at either end because they hide in messages and shells.

    Args:
        name: The experiment name.
        data_file: The data file it was derived from, when no name was given.

    Returns:
        A message stating the rule broken, the rule, and a valid name to pass instead; "" when the name is valid.
    """
    reasons = []
    if not name.strip():
        reasons.append("is empty" if not name else "is only spaces")
    elif name != name.strip():
        reasons.append("starts or ends with a space")
    found = [shown for char, shown in _FORBIDDEN.items() if char in name]
    if found:
        reasons.append(f"has {', '.join(found)}")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):  # Cs: undecodable bytes from the command line
        reasons.append("has control characters or bytes that are not UTF-8")
    if name == ".":
        reasons.append("is '.'")
    elif name.startswith(".."):
        reasons.append("starts with '..'")
    size = len(name.encode("utf-8", errors="surrogateescape"))
    if size > EXPERIMENT_NAME_MAX_BYTES:
        reasons.append(f"is {size} bytes long in UTF-8, over {EXPERIMENT_NAME_MAX_BYTES}")
    if not reasons:
        return ""
    shown = repr(name if len(name) <= 60 else name[:40] + "...")
    source = f", taken from the data file's name {Path(data_file).name!r}," if data_file else ""
    hint = " (or set tracking.experiment)" if data_file else ""
    return (
        f"experiment name {shown}{source} {' and '.join(reasons)}; {EXPERIMENT_NAME_RULE}; "
        f"pass --experiment {shlex.quote(suggest_experiment_name(name))}{hint}"
    )


def suggest_experiment_name(name: str) -> str:
    """A valid experiment name close to `name`, to suggest in a message.

    Path parts are joined with `_` (`.`, `..` and empty parts dropped), other forbidden
    characters become `_`, dots and spaces at either end are trimmed, and at most 64
    characters are kept: the last ones of a path (`/home/me/churn` gives `home_me_churn`),
    else the first ones.

    Args:
        name: Any name.

    Returns:
        A name `experiment_name_problem` accepts (`experiment` when nothing usable is left).
    """
    parts = [p for p in name.replace("\\", "/").split("/") if p.strip() not in ("", ".", "..")]
    kept = "_".join(parts)
    kept = "".join("_" if c in _FORBIDDEN or unicodedata.category(c) in ("Cc", "Cs") else c for c in kept)
    kept = (kept[-64:] if len(parts) > 1 else kept[:64]).strip().strip("._").strip()
    return kept if kept and not experiment_name_problem(kept) else "experiment"


def check_outputs(config: Config) -> Path:
    """Check, before any data is read, the experiment name and that the model could be exported under `--out`.

    The name is checked whether it was given or derived from the data file's stem. Then the
    export folder `<out>/<experiment>/model` must resolve inside `--out`, and `--out` must be
    a folder or be possible to make, and be writable (see `pipeline.paths.check_export_target`).

    Args:
        config: The validated configuration.

    Returns:
        The export folder, `<out>/<experiment>/model`.

    Raises:
        ConfigError: The name breaks a rule (the message states it and suggests a valid name),
            or the export folder cannot be used.
    """
    derived = None if config.tracking.experiment else Path(config.data.path)
    problem = experiment_name_problem(config.experiment, derived)
    if problem:
        raise ConfigError(problem)
    return paths.check_export_target(config.deployment.out, config.experiment)


def min_score_problem(min_score: float | None, metric: str) -> str:
    """Check `business.min_score` against the range of the metric it applies to.

    Args:
        min_score: The configured threshold, or None.
        metric: The primary metric's name.

    Returns:
        A message naming the problem, or "" when the threshold is possible.
    """
    if min_score is None:
        return ""
    low, high = METRICS[metric].bounds
    if not math.isfinite(min_score) or not low <= min_score <= high:
        span = f"at most {high:g}" if low == -math.inf else f"between {low:g} and {high:g}" if high < math.inf else f"at least {low:g}"
        return f"business.min_score {min_score:g} is impossible for {metric}, whose scores are {span}; fix min_score"
    return ""


def _evaluation_problems(e: EvaluationConfig) -> list[str]:
    problems = []
    if e.selection not in SELECTION_RULES and e.selection not in DEPRECATED_RULES:
        problems.append(
            f"evaluation.selection '{e.selection}' is unknown{did_you_mean(e.selection, [*SELECTION_RULES, *DEPRECATED_RULES])}; "
            f"use {' or '.join(SELECTION_RULES)}"
        )
    if not 0.0 < e.alpha < 1.0:
        problems.append(
            f"evaluation.alpha must be between 0 and 1 (the largest accepted chance of losing more than the "
            f"tolerance, e.g. 0.05), got {e.alpha}"
        )
    if not (math.isfinite(e.tolerance) and e.tolerance >= 0.0):
        problems.append(
            f"evaluation.tolerance must be a finite number of 0 or more (the largest loss a simpler model may cost, "
            f"in the metric's units, e.g. {DEFAULT_TOLERANCE}), got {e.tolerance}"
        )
    if not (math.isfinite(e.relative_tolerance) and 0.0 <= e.relative_tolerance < 1.0):
        problems.append(
            f"evaluation.relative_tolerance must be at least 0 and below 1 (a share of the top model's score, "
            f"e.g. {DEFAULT_RELATIVE_TOLERANCE} for 1%), got {e.relative_tolerance}"
        )
    if not e.holdout_tolerance_sd > 0.0:
        problems.append(f"evaluation.holdout_tolerance_sd must be positive (e.g. 3.0), got {e.holdout_tolerance_sd}")
    return problems


def _business_problems(b: BusinessConfig) -> list[str]:
    problems = []
    if b.metric in METRICS:
        problems.append(min_score_problem(b.min_score, b.metric))
    elif b.min_score is not None and not math.isfinite(b.min_score):
        problems.append(f"business.min_score must be a finite number, got {b.min_score}")
    if not (math.isfinite(b.min_margin_over_baseline) and b.min_margin_over_baseline >= 0.0):
        problems.append(
            f"business.min_margin_over_baseline must be 0 or more (in the metric's units), got {b.min_margin_over_baseline}"
        )
    for key in ("max_latency_ms_per_row", "max_model_mb"):
        value = getattr(b, key)
        if value is not None and not (math.isfinite(value) and value > 0.0):
            problems.append(f"business.{key} must be a positive number (or absent for no limit), got {value}")
    return [p for p in problems if p]
