"""Start and stop the stack's server processes; find free loopback ports."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

LOOPBACK = "127.0.0.1"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL_LOW = _ephemeral_range()[0]
_rng = random.Random()      # seeded from os.urandom: parallel test runs pick differently
_handed_out: set = set()


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free right now on 127.0.0.1 for TCP and UDP, below the kernel's
    ephemeral range: the kernel's own picks (the local port of every outgoing
    connection, servers bound to port 0) never land on it, so a server started
    a moment later does not find it taken. Never the same port twice in a run."""
    low = 10_000
    if _EPHEMERAL_LOW - low >= 5_000:
        for _ in range(200):
            port = _rng.randrange(low, _EPHEMERAL_LOW)
            if port not in _handed_out and _free(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, kind) as s:   # an unusual port range: let the kernel pick
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class StartupError(RuntimeError):
    pass


class Process:
    """One server process in its own process group, output in a log file.

    stop() signals the whole group, so children a server forks (ZoneMTA's
    SMTP and sender processes) go with it.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, cwd=cwd, env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise StartupError(
                    f"{self.name} exited with {self.popen.returncode} before {what}; "
                    f"log {self.log_path}:\n{self.log_text()[-4000:]}")
            try:
                if ready():
                    return
            except Exception:  # not ready yet; any error just means "poll again"
                pass
            time.sleep(0.1)
        self.stop()
        raise StartupError(f"{self.name}: no {what} within {timeout}s; "
                           f"log {self.log_path}:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(5)
        # Children still alive after the leader left (ZoneMTA's forks) go too.
        self._signal_group(signal.SIGKILL)
        self._log.close()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)  # group id == our child's pid
        except ProcessLookupError:
            pass
