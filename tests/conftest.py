"""Shared fixtures: real OTLP receivers, ZoneMTA's real remote-log encoder, and
the sidecar as a subprocess (the way an operator runs it)."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import emitted
from tests.otlp_receiver import GrpcReceiver, HttpReceiver, Received
from tests.stack.proc import free_port  # also imported from here by other tests

pytest_plugins = ["tests.stack.fixtures"]   # real Redis, FerretDB, ZoneMTA, SMTP sink

ROOT = Path(__file__).resolve().parent.parent
ENCODER_DIR = ROOT / "tests" / "fixtures" / "msgpack_js"


# -- ZoneMTA's encoder ---------------------------------------------------------
def _ensure_node_modules(directory: Path) -> None:
    if not (directory / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=directory, check=True)


def encode_js(entries: list[dict]) -> list[bytes]:
    """Datagrams exactly as ZoneMTA's remote log makes them (msgpack-js@0.3.0 in node).

    The string "__undefined__" stands for JavaScript's undefined.
    """
    _ensure_node_modules(ENCODER_DIR)
    lines = "".join(json.dumps(e) + "\n" for e in entries)
    out = subprocess.run(["node", str(ENCODER_DIR / "encode.js")], input=lines, capture_output=True,
                         text=True, check=True)
    return [base64.b64decode(x) for x in out.stdout.splitlines()]


@pytest.fixture(scope="session")
def js_encode():
    return encode_js


# -- receivers --------------------------------------------------------------------
@pytest.fixture
def grpc_receiver():
    r = GrpcReceiver()
    yield r
    r.stop()


@pytest.fixture
def http_receiver():
    r = HttpReceiver()
    yield r
    r.stop()


# -- the sidecar as a process ------------------------------------------------------
class Sidecar:
    def __init__(self, env: dict, tmp: Path, config: Path | None = None):
        self.remote_log_port = free_port(socket.SOCK_DGRAM)
        self.health_port = free_port()
        self.data_dir = tmp / "data"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "K8S_"))},
                    "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{self.remote_log_port}",
                    "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
                    "OTEL_MTA_DATA_DIR": str(self.data_dir),
                    "OTEL_MTA_GELF_ENDPOINT": "off", "OTEL_MTA_EVENTS_ENDPOINT": "off",
                    "OTEL_MTA_ZONEMTA_API_URL": "off",
                    "OTEL_BLRP_SCHEDULE_DELAY": "100", "OTEL_BSP_SCHEDULE_DELAY": "100",
                    "PYTHONUNBUFFERED": "1", **env}
        args = [sys.executable, "-m", "otel_mta", "run"] + (["--config", str(config)] if config else [])
        self.log_path = tmp / "sidecar.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env=self.env, cwd=tmp, stdout=self._log, stderr=subprocess.STDOUT)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def wait_ready(self, timeout: float = 15.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sidecar exited {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as r:
                    return json.loads(r.read())
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"sidecar not ready after {timeout}s:\n{self.output()}")

    def send(self, datagrams: list[bytes], pause_every: int = 0) -> None:
        for i, d in enumerate(datagrams):
            self.sock.sendto(d, ("127.0.0.1", self.remote_log_port))
            if pause_every and i % pause_every == pause_every - 1:
                time.sleep(0.001)

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self._log.close()


@pytest.fixture
def sidecar(tmp_path):
    started = []

    def start(env: dict | None = None, config: Path | None = None, wait: bool = True) -> Sidecar:
        sc = Sidecar(env or {}, tmp_path, config)
        started.append(sc)
        if wait:
            sc.wait_ready()
        return sc

    yield start
    for sc in started:
        sc.close()


@pytest.fixture(autouse=True)
def _no_attribute_limits_left_over():
    """A Pipeline sets the encoders' length limits process-wide (wire.set_limits):
    no test sees the limits of the one before it."""
    yield
    from otel_mta.signals import wire
    wire.set_limits()


# -- an in-process pipeline whose output is parsed like a receiver's --------------
@pytest.fixture
def capture():
    """(make_pipeline, Received): build a Pipeline whose exports land in Received."""
    from otel_mta import config
    from otel_mta.pipeline import Pipeline
    from tests.otlp_receiver import REQUEST

    received = Received()

    def submit(signal_name: str, payload: bytes, count: int) -> None:
        received.add(signal_name, REQUEST[signal_name].FromString(payload))

    def make(env: dict | None = None, channels: int = 1) -> Pipeline:
        settings = config.load(environ={"OTEL_MTA_DATA_DIR": "/nonexistent", **(env or {})})
        return Pipeline(settings, submit, channels)

    return make, received


def pytest_collection_modifyitems(session, config, items):
    # the catalog coverage test must see what every other test emitted
    last = [i for i in items if i.nodeid.startswith("tests/test_zz_")]
    for item in last:
        items.remove(item)
    items.extend(last)
    emitted.COLLECTED_MODULES.update({str(i.path) for i in items})
