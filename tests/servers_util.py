"""Real server processes for tests: free ports, bounded waits, and a stop by process id.

Each server runs in its own session (so its own process group), and `running` stops that
whole group when the `with` block ends, whether the test passed or failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline import servers
from pipeline.errors import TrackingError

BIN = Path(sys.executable).parent
CRISPML = BIN / "crispml"
MLFLOW = BIN / "mlflow"
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
LIGHT_SERVER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"
"""A PATH without the virtual environment's bin/, as for a user who did not activate it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without an ambient MLflow tracking URI, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Server:
    """A started server process and where its output goes."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def log(self, chars: int = 3000) -> str:
        """The end of its stderr and stdout, for failure messages."""
        text = ""
        for path in (self.stderr, self.stdout):
            if path.exists():
                text += f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}\n"
        return text

    def first_line(self, timeout: float = READY_TIMEOUT) -> str:
        """Wait for the first complete line on stdout (the URL the command prints).

        Raises:
            AssertionError: The process exited, or printed nothing, within `timeout`.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout.read_text() if self.stdout.exists() else ""
            if "\n" in text:
                return text.splitlines()[0].strip()
            if self.process.poll() is not None:
                raise AssertionError(f"exited with code {self.process.returncode} before printing\n{self.log()}")
            time.sleep(0.2)
        raise AssertionError(f"printed no line within {timeout:.0f} s\n{self.log()}")

    def wait_http(self, url: str, timeout: float = READY_TIMEOUT) -> None:
        """Wait until `url` answers 200.

        Raises:
            AssertionError: The process exited, or the URL did not answer, within `timeout`.
        """
        try:
            servers.wait_until_ready(url, self.process, timeout, "the server")
        except TrackingError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process's whole group by its id: SIGTERM, then SIGKILL after `timeout`."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    # Whatever is left in the group (a worker that outlived its parent) is killed too.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def running(command: Sequence[str | Path], logs: Path, name: str, cwd: Path, env: dict[str, str]) -> Iterator[Server]:
    """Start a server in its own process group; stop the group when the block ends.

    Args:
        command: The program and its arguments.
        logs: A folder for its stdout and stderr files.
        name: A name for those files.
        cwd: Its working folder.
        env: Its environment.

    Yields:
        The server.
    """
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [str(c) for c in command], cwd=cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
    try:
        yield Server(process, out, err)
    finally:
        stop(process)
