"""`python -m serving` as a child process on a free loopback port (benchmarks, the soak, CLI tests).

A context manager: start it, wait until `/ready`, use `url`, and on exit send SIGTERM (the
server drains) and wait, killing it only when the drain overruns.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from data.paths import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """Args:
        args: extra `python -m serving` flags (everything but --host/--port).
        log_path: where the server's stdout and stderr go.
        ready_timeout_s: how long start-up (imports, model load, profile) may take.
    """

    def __init__(self, args: list[str], log_path: Path, ready_timeout_s: float = 300.0):
        self.args = list(args)
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._launched_at = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> "ServerProcess":
        """Launch and wait until ready."""
        return self.launch().wait_ready()

    def launch(self) -> "ServerProcess":
        """Start the process without waiting (several servers can then load at once)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._launched_at = time.monotonic()
        return self

    def wait_ready(self) -> "ServerProcess":
        """Block until `/ready` answers 200; raise (after stopping it) if it dies or times out."""
        deadline = self._launched_at + self.ready_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop(timeout_s=5)
                raise RuntimeError(f"server not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, num_lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-num_lines:])

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain), then wait; SIGKILL only when the drain overruns. Returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
