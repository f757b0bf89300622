"""A real WildDuck (npm @zone-eu/wildduck, pinned in wildduck/package-lock.json,
installed by setup.sh into .cache/wildduck/<version>/) on FerretDB and Redis.

Config reaches WildDuck the way it documents: wild-config loads the package's
config/default.toml and deep-merges the JSON file named by NODE_CONFIG_PATH
over it. Ours puts MongoDB and Redis at the test's servers, IMAP, POP3, LMTP,
the API and the Prometheus listener on free loopback ports, GELF (when asked)
at the test's UDP port, and runs one process.

What runs on FerretDB v1 (tests/stack/README.md): the API's user management,
IMAP and POP3 logins and an empty mailbox, LMTP recipient checks and the
forwarding of incoming mail into ZoneMTA's queue, /metrics. Storing a message
does not: FerretDB refuses `findAndModify` with `fields` (LMTP DATA answers
450 for a local recipient, and a wrong password is a database error, not a
failed login), nested arrays and aggregation-pipeline updates.
"""

from __future__ import annotations

import imaplib
import json
import poplib
import smtplib
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from . import paths
from .proc import LOOPBACK, Process, free_port, port_open
from .zonemta import deep_merge

SERVICES = ("imap", "pop3", "lmtp", "api", "metrics")


def _tls() -> ssl.SSLContext:
    # WildDuck's bundled self-signed certificate serves STARTTLS
    return ssl._create_unverified_context()  # noqa: S323 - loopback test server


class WildDuck:
    """One WildDuck process.

    Attributes: imap_port, pop3_port, lmtp_port, api_port, metrics_port,
    api_url, metrics_url, mongo_uri (with the per-instance database), mongo_db,
    sender_db (ZoneMTA's database it queues forwarded mail into), gelf_host
    (the `host` of its GELF messages), config, config_path, log_path, version.
    """

    def __init__(self, workdir: Path, *, mongo_uri: str, redis_host: str, redis_port: int,
                 gelf_port: int | None = None, gelf_connection: str = "lan",
                 metrics: bool = True, config: dict | None = None, mongo_db: str | None = None,
                 sender_db: str = "zone-mta", redis_db: int = 3, env: dict | None = None,
                 start_timeout: float = 90):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        package = paths.wildduck_dir()
        self.version = json.loads((package / "package.json").read_text())["version"]
        ports = {name: free_port() for name in SERVICES}
        self.imap_port, self.pop3_port, self.lmtp_port = ports["imap"], ports["pop3"], ports["lmtp"]
        self.api_port, self.metrics_port = ports["api"], ports["metrics"]
        self.api_url = f"http://{LOOPBACK}:{self.api_port}"
        self.metrics_url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        self.mongo_db = mongo_db or f"wildduck-{uuid.uuid4().hex[:8]}"
        self.mongo_uri = mongo_uri.rstrip("/") + "/" + self.mongo_db
        self.sender_db = sender_db
        self.gelf_host = f"wildduck-{uuid.uuid4().hex[:6]}"

        base = {
            "processes": 1,
            "dbs": {"mongo": self.mongo_uri, "sender": sender_db,
                    "redis": {"host": redis_host, "port": redis_port, "db": redis_db}},
            "imap": {"host": LOOPBACK, "port": self.imap_port, "secure": False},
            "pop3": {"host": LOOPBACK, "port": self.pop3_port, "secure": False},
            "lmtp": {"enabled": True, "host": LOOPBACK, "port": self.lmtp_port},
            "api": {"host": LOOPBACK, "port": self.api_port},
            "metrics": {"enabled": metrics, "host": LOOPBACK, "port": self.metrics_port,
                        "collectCacheTtl": 0},
            "log": {"level": "info", "gelf": {"enabled": False}},
        }
        if gelf_port:
            base["log"]["gelf"] = {"enabled": True, "hostname": self.gelf_host, "component": "wildduck",
                                   "options": {"graylogPort": gelf_port, "graylogHostname": LOOPBACK,
                                               "connection": gelf_connection}}
        self.config = deep_merge(base, config or {})
        self.config_path = self.workdir / "wildduck.json"
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.log_path = self.workdir / "wildduck.log"

        # wild-config reads config/default.toml from the working directory
        self.proc = Process(
            "wildduck", [paths.node_bin(), package / "server.js"], self.log_path, cwd=package,
            env={"NODE_CONFIG_PATH": str(self.config_path), "NODE_ENV": "production", **(env or {})})
        wanted = [self.imap_port, self.pop3_port, self.lmtp_port, self.api_port]
        if metrics:
            wanted.append(self.metrics_port)
        self.proc.wait_until(lambda: all(port_open(p) for p in wanted), start_timeout,
                             "IMAP, POP3, LMTP, API and metrics listeners")

    # --- API -----------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 15) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def create_user(self, username: str, password: str, address: str | None = None, **fields) -> str:
        """POST /users; returns the new account's id."""
        body = {"username": username, "password": password, **fields}
        if address:
            body["address"] = address
        status, doc = self.api("POST", "/users", body)
        assert status == 200 and doc.get("success"), f"POST /users -> {status}: {doc}"
        return doc["id"]

    # --- protocols -------------------------------------------------------------
    def imap_login(self, username: str, password: str, select: bool = True) -> tuple[bool, str]:
        """LOGIN after STARTTLS (WildDuck refuses LOGIN in clear text), SELECT
        INBOX, LOGOUT. (logged in?, WildDuck's answer)."""
        with imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=15) as m:
            m.starttls(_tls())
            try:
                # an empty password has to go as "" (imaplib sends nothing otherwise)
                typ, data = m._simple_command("LOGIN", username, m._quote(password)) if password == "" \
                    else m.login(username, password)
            except imaplib.IMAP4.error as err:
                text = err.args[0] if err.args else ""
                return False, text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            ok = typ == "OK"
            if ok and select:
                m.select("INBOX")
            return ok, b" ".join(d for d in data if isinstance(d, bytes)).decode()

    def pop3_login(self, username: str, password: str) -> tuple[int, int]:
        """USER/PASS after STLS; (messages, octets) of STAT."""
        p = poplib.POP3(LOOPBACK, self.pop3_port, timeout=15)
        try:
            p.stls(_tls())
            p.user(username)
            p.pass_(password)
            return p.stat()
        finally:
            p.quit()

    def lmtp_send(self, mail_from: str, rcpts: list[str], message: str) -> dict:
        """One LMTP transaction: {recipient: (code, reply)} of each RCPT TO and,
        when one was accepted, {"DATA": (code, reply)} (the first recipient's)."""
        out: dict = {}
        with smtplib.LMTP(LOOPBACK, self.lmtp_port, timeout=30) as lmtp:
            lmtp.ehlo()    # LHLO
            lmtp.mail(mail_from)
            for rcpt in rcpts:
                code, reply = lmtp.rcpt(rcpt)
                out[rcpt] = (code, reply.decode(errors="replace"))
            if any(code < 300 for code, _ in out.values()):
                code, reply = lmtp.data(message.replace("\r\n", "\n").replace("\n", "\r\n").encode())
                out["DATA"] = (code, reply.decode(errors="replace"))
        return out

    # --- /metrics --------------------------------------------------------------
    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=15) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """Value of one /metrics sample with exactly these labels (None if absent)."""
        from prometheus_client.parser import text_string_to_metric_families
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    def log_text(self) -> str:
        return self.proc.log_text()

    def stop(self) -> None:
        self.proc.stop()
