"""The typed errors of `stages.errors`: which built-in kinds they are, what an interruption carries and exits with, the spelling hint.

(Not `test_errors.py`: test files need unique names, and `tests/pipeline/test_errors.py` is the command line's catalogue of bad input.)
"""

import signal

import pytest

from stages.errors import (
    ClusterError,
    ConfigError,
    CrispmlError,
    DataError,
    Interrupted,
    ModelLoadError,
    TrackingError,
    UsageError,
    did_you_mean,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UsageError, ValueError),
        (ConfigError, ValueError),
        (DataError, ValueError),
        (ModelLoadError, ValueError),
        (TrackingError, RuntimeError),
        (ClusterError, RuntimeError),
    ],
)
def test_every_user_error_is_a_crispml_error_of_the_built_in_kind_callers_catch(error, kind):
    assert issubclass(error, CrispmlError) and issubclass(error, kind)
    with pytest.raises(kind, match="what failed"):
        raise error("what failed, and how to fix it")


def test_an_interruption_is_not_an_error_so_except_exception_does_not_swallow_it():
    assert issubclass(Interrupted, KeyboardInterrupt)
    assert not issubclass(Interrupted, Exception) and not issubclass(Interrupted, CrispmlError)


def test_an_interruption_exits_with_128_plus_its_signal():
    ctrl_c = Interrupted()
    assert ctrl_c.signum == signal.SIGINT and ctrl_c.exit_code == 130 and str(ctrl_c) == "SIGINT"
    assert ctrl_c.partial is None
    term = Interrupted(signal.SIGTERM, partial="half a leaderboard")
    assert term.exit_code == 143 and str(term) == "SIGTERM" and term.partial == "half a leaderboard"


def test_carrying_keeps_the_signal_and_attaches_what_was_finished():
    again = Interrupted.carrying(Interrupted(signal.SIGTERM), partial=[1, 2])
    assert isinstance(again, Interrupted) and again.signum == signal.SIGTERM and again.partial == [1, 2]
    plain = Interrupted.carrying(KeyboardInterrupt(), partial="rows")
    assert plain.signum == signal.SIGINT and plain.exit_code == 130 and plain.partial == "rows"


def test_did_you_mean_suggests_the_closest_name_or_nothing():
    assert did_you_mean("lable", ["x1", "label", "colour"]) == "; did you mean 'label'?"
    assert did_you_mean("colur", iter(["x1", "label", "colour"])) == "; did you mean 'colour'?"  # any iterable
    assert did_you_mean("zzz", ["x1", "label"]) == ""
    assert did_you_mean("label", []) == ""
