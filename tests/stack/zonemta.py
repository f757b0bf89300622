"""A real ZoneMTA (npm @zone-eu/zone-mta, pinned in zonemta/package-lock.json).

Config reaches ZoneMTA the way it documents: wild-config loads the package's
config/default.js and deep-merges the JSON file named by NODE_CONFIG_PATH over
it. Our JSON puts MongoDB/Redis at the test's servers, every listener on a free
loopback port, and sends all mail of the `default` and `bounces` zones to the
test's SMTP sink through the zone's own `host`/`port` settings ("use next MTA
instead of actual MX" in default.js), so no DNS lookup happens. MTA-STS is off
for the same reason (it would fetch policies from the network).
"""

from __future__ import annotations

import base64
import copy
import json
import smtplib
import subprocess
import urllib.error
import urllib.request
import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from . import paths
from .proc import LOOPBACK, Process, free_port

DECODER = paths.HERE / "zonemta" / "decode-remote-log.js"
READY_PLUGIN = paths.HERE / "zonemta" / "ready-plugin.js"


def deep_merge(base: dict, extra: dict) -> dict:
    """base updated by extra, recursing into dicts (lists and scalars replace)."""
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class ZoneMTA:
    """One ZoneMTA master process (with its forked SMTP and sender processes).

    Attributes: smtp_host/smtp_port (the `feeder` SMTP interface), api_port and
    api_url (HTTP API, also /metrics), queue_server_port, mongo_uri (with the
    per-instance database), mongo_db, redis_url, config (the dict written to
    config_path), log_path, workdir, version.
    """

    def __init__(self, workdir: Path, *, mongo_uri: str, redis_host: str, redis_port: int,
                 sink_host: str, sink_port: int, remote_log_port: int | None = None,
                 gelf_port: int | None = None, gelf_connection: str = "lan",
                 plugins: dict[str, Any] | None = None, config: dict | None = None,
                 mongo_db: str | None = None, redis_db: int = 3, env: dict | None = None,
                 start_timeout: float = 60):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        package = paths.zonemta_dir()
        self.version = json.loads((package / "package.json").read_text())["version"]
        self.smtp_host = LOOPBACK
        self.smtp_port = free_port()
        self.api_port = free_port()
        self.queue_server_port = free_port()
        self.api_url = f"http://{LOOPBACK}:{self.api_port}"
        self.mongo_db = mongo_db or f"zone-mta-{uuid.uuid4().hex[:8]}"
        self.mongo_uri = mongo_uri.rstrip("/") + "/" + self.mongo_db
        self.redis_url = f"redis://{redis_host}:{redis_port}/{redis_db}"

        zone = {"host": sink_host, "port": sink_port, "processes": 1, "connections": 2,
                "pool": "default", "ignoreIPv6": True}
        base = {
            "dbs": {"mongo": self.mongo_uri, "sender": self.mongo_db,
                    "redis": {"host": redis_host, "port": redis_port, "db": redis_db}},
            "smtpInterfaces": {"feeder": {"enabled": True, "host": LOOPBACK,
                                          "port": self.smtp_port, "processes": 1}},
            "api": {"host": LOOPBACK, "port": self.api_port},
            "queueServer": {"host": LOOPBACK, "port": self.queue_server_port},
            "mtaSts": {"enabled": False},
            "pools": {"default": [{"address": LOOPBACK, "name": "localhost"}]},
            "zones": {"default": zone, "bounces": dict(zone, connections=1)},
            "log": {"level": "info", "remote": False, "gelf": {"enabled": False}},
            "corePluginsPath": str(package / "plugins"),
            "pluginsPath": str(self.workdir),
            # The ready marker goes last, so it loads after every other plugin.
            "plugins": {**(plugins or {}), str(READY_PLUGIN): {
                "enabled": "main", "readyFile": str(self.workdir / "ready")}},
        }
        if remote_log_port:
            base["log"]["remote"] = {"protocol": "udp4", "host": LOOPBACK, "port": remote_log_port}
        if gelf_port:
            base["log"]["gelf"] = {"enabled": True, "component": "mta", "options": {
                "graylogPort": gelf_port, "graylogHostname": LOOPBACK,
                "connection": gelf_connection}}
        self.config = deep_merge(base, config or {})
        self.config_path = self.workdir / "zonemta.json"
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.log_path = self.workdir / "zonemta.log"

        self.proc = Process(
            "zonemta", [paths.node_bin(), package / "app.js"], self.log_path, cwd=self.workdir,
            env={"NODE_CONFIG_PATH": str(self.config_path), "NODE_ENV": "production",
                 **(env or {})})
        self.proc.wait_until((self.workdir / "ready").exists, start_timeout,
                             "main-process plugins loaded")
        self.proc.wait_until(self._smtp_ready, start_timeout, "SMTP greeting")

    # --- readiness -----------------------------------------------------------
    def _smtp_ready(self) -> bool:
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=2) as s:
            return s.noop()[0] == 250

    # --- API -----------------------------------------------------------------
    def api_get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def api_json(self, path: str) -> Any:
        status, body = self.api_get(path)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def metrics_text(self) -> str:
        status, body = self.api_get("/metrics")
        assert status == 200, f"GET /metrics -> {status}"
        return body.decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """Value of one /metrics sample with exactly these labels (None if absent)."""
        from prometheus_client.parser import text_string_to_metric_families
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                # The parser names counter samples <name>_total; prom-client does not.
                counter = family.type == "counter" and sample.name == family.name + "_total"
                if (sample.name == name or (counter and family.name == name)) \
                        and sample.labels == labels:
                    return sample.value
        return None

    # --- SMTP ----------------------------------------------------------------
    def send(self, mail_from: str, rcpt_to: list[str] | str, subject: str = "otel-mta test",
             body: str = "Hello from the otel-mta stack test.\n", message_id: str | None = None,
             headers: dict[str, str] | None = None) -> str:
        """Submit one message to the feeder interface; returns its Message-ID."""
        rcpts = [rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to)
        msg = EmailMessage()
        msg["From"] = mail_from
        msg["To"] = ", ".join(rcpts)
        msg["Subject"] = subject
        msg["Message-ID"] = message_id or make_msgid(domain="otel-mta.test")
        for key, value in (headers or {}).items():
            msg[key] = value
        msg.set_content(body)
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=30) as s:
            refused = s.send_message(msg, from_addr=mail_from, to_addrs=rcpts)
        assert not refused, f"ZoneMTA refused recipients: {refused}"
        return msg["Message-ID"]

    def log_text(self) -> str:
        return self.proc.log_text()

    def stop(self) -> None:
        self.proc.stop()


def decode_remote_log(datagrams: list[bytes]) -> list[dict]:
    """Decode remote-log datagrams with msgpack-js itself (ZoneMTA's encoder).

    A reference for tests of our own decoder: `undefined` values come back as
    {"$undefined": True}, Buffers as {"$base64": ...}.
    """
    if not datagrams:
        return []
    stdin = "".join(base64.b64encode(d).decode() + "\n" for d in datagrams)
    out = subprocess.run([str(paths.node_bin()), str(DECODER)], input=stdin, text=True,
                         capture_output=True, check=True, timeout=60,
                         cwd=DECODER.parent)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
