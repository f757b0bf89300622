"""Fixtures for the events endpoint: the real ZoneMTA plugin driven through
ZoneMTA's real plugin host (plugin_driver.js), and the sidecar with its events
endpoint on."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

PLUGIN_DIR = ROOT / "zonemta-plugin"
DRIVER = Path(__file__).with_name("plugin_driver.js")


def ensure_plugin_modules() -> None:
    """The plugin's dev dependencies (ZoneMTA's plugin host, mailsplit), as its ci.sh installs them."""
    if (PLUGIN_DIR / "node_modules" / "@zone-eu" / "wild-plugins").is_dir():
        return
    env = {**os.environ, "npm_config_cache": str(ROOT / ".cache" / "npm"), "npm_config_fund": "false",
           "npm_config_audit": "false", "npm_config_update_notifier": "false"}
    subprocess.run(["npm", "ci", "--silent"], cwd=PLUGIN_DIR, env=env, check=True)


class PluginDriver:
    """The plugin in a node process; `call(op, **args)` runs one command (see plugin_driver.js)."""

    def __init__(self, log_path: Path):
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(["node", str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)

    def call(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"plugin driver exited ({self.proc.poll()})")
        answer = json.loads(line)
        assert answer.pop("ok"), answer.get("error")
        return answer

    def load(self, context: str, **config) -> int:
        return self.call("load", context=context, config=config)["index"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def plugin_modules():
    ensure_plugin_modules()
    return PLUGIN_DIR


@pytest.fixture
def plugin_driver(plugin_modules, tmp_path):
    drivers = []

    def start() -> PluginDriver:
        d = PluginDriver(tmp_path / f"driver-{len(drivers)}.log")
        drivers.append(d)
        return d

    yield start
    for d in drivers:
        d.close()


@pytest.fixture
def events_sidecar(sidecar):
    """start(receiver, **env) -> the sidecar with its events endpoint on a free port (`.events_url`)."""

    def start(receiver=None, env: dict | None = None, config=None, wait: bool = True, port: int | None = None):
        port = port or free_port()
        base = {"OTEL_MTA_EVENTS_ENDPOINT": f"127.0.0.1:{port}", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
        if receiver is not None:
            base["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        sc = sidecar({**base, **(env or {})}, config=config, wait=wait)
        sc.events_port = port
        sc.events_url = f"http://127.0.0.1:{port}"
        return sc

    return start
