"""`pipeline.interrupts`: a signal stops a run only where stopping is safe, and is never lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline import interrupts
from pipeline.errors import EXIT_TERMINATED, Interrupted


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def settle(seconds: float = 30.0) -> None:
    """Wait for the handler to see the signal: until it raises, or it has recorded a held one (or 30 s pass)."""
    deadline = time.monotonic() + seconds
    while not interrupts._pending and time.monotonic() < deadline:
        time.sleep(0.001)


def test_a_signal_outside_a_held_block_is_raised_at_once():
    with interrupts.on_signals(), pytest.raises(Interrupted) as caught:
        sigterm()
        settle()
        pytest.fail("not interrupted")
    assert caught.value.exit_code == EXIT_TERMINATED


def test_a_signal_in_held_blocks_is_raised_when_the_outermost_ends():
    done = []
    with interrupts.on_signals(), pytest.raises(Interrupted):
        with interrupts.held():
            with interrupts.held():
                sigterm()
                settle()
                done.append("inner")
            done.append("outer")
        done.append("after")
    assert done == ["inner", "outer"]


def test_check_raises_a_held_signal_at_once_and_only_once():
    done = []
    with interrupts.on_signals():
        with pytest.raises(Interrupted), interrupts.held():
            sigterm()
            settle()
            done.append("before the check")
            interrupts.check()
            done.append("after the check")
        with interrupts.held():
            interrupts.check()  # nothing pending now
    assert done == ["before the check"]


def test_a_held_signal_replaces_an_error_leaving_the_block():
    with interrupts.on_signals(), pytest.raises(Interrupted) as caught:
        with interrupts.held():
            sigterm()
            settle()
            raise OSError("disk full")
    assert isinstance(caught.value.__context__, OSError)


def test_a_signal_that_lands_where_python_ignores_exceptions_is_delivered_again(capsys):
    class Collected:
        def __del__(self):
            sigterm()
            settle(0.05)  # the handler runs here: Python ignores what a __del__ raises

    with interrupts.on_signals(), pytest.raises(Interrupted):
        Collected()
        settle()
        pytest.fail("the signal was lost")
    assert "Exception ignored" not in capsys.readouterr().err


def test_held_does_nothing_outside_the_main_thread():
    import threading

    errors = []

    def work():
        try:
            with interrupts.held():
                pass
            interrupts.check()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with interrupts.on_signals():
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert errors == []


def test_a_second_signal_exits_at_once_without_clean_up():
    code = textwrap.dedent(
        """
        import os, signal, time
        from pipeline import interrupts
        with interrupts.on_signals(), interrupts.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_TERMINATED
    assert done.stderr.strip() == "crispml: SIGTERM again; exiting without clean-up"
