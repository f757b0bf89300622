"""`otel-mta top` in a real terminal (tmux: send-keys, capture-pane) against a real
sidecar process, and the sidecar's GET /status behind it.

The full test feeds the sidecar with a real ZoneMTA (npm, on FerretDB and Redis)
delivering to an SMTP sink that accepts, greylists (451) and rejects (550); the
sidecar hears its remote log and polls its API and its MongoDB queue. The others
feed it datagrams made by ZoneMTA's own encoder (msgpack-js)."""
from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.stack import paths

ROOT = Path(__file__).resolve().parent.parent
ESC = "\x1b["
_sessions = itertools.count()


class Terminal:
    """One tmux pane of `width` x `height` running `argv`, on a private tmux server
    (its own socket: other tmux servers on the machine are left alone). A shell
    around the program prints `[exit N]` when it ends (tmux 3.3's own
    pane_dead_status is sometimes never set), and the pane stays afterwards."""

    def __init__(self, argv: list[str], tmp: Path, width: int = 80, height: int = 24, env: dict | None = None):
        self.tmux = paths.tmux_bin()
        self.socket = f"otelmta-test-{os.getpid()}-{next(_sessions)}"
        conf = tmp / f"{self.socket}.conf"
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 5000\nset -g status off\n")
        env_args = [f"{k}={v}" for k, v in (env or {}).items()]
        program = ["env", "-u", "NO_COLOR", "-u", "COLUMNS", "-u", "LINES", *env_args, *argv]
        command = shlex.join(["sh", "-c", '"$@"; echo "[exit $?]"', "sh", *program])
        self._tmux("-f", str(conf), "new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), command)

    def _tmux(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def screen(self, escapes: bool = False, history: bool = False) -> str:
        args = ["capture-pane", "-p", "-t", "top"] + (["-e"] if escapes else []) + (["-J", "-S", "-"] if history else [])
        return self._tmux(*args)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def output(self) -> str:
        """Everything the program wrote (after it ended), without the `[exit N]` line."""
        text = self.screen(history=True)
        return text[: text.rindex("[exit ")]

    def wait(self, condition, timeout: float = 30.0, what: str = "the screen"):
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            result = condition(text)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen within {timeout:g}s; the screen:\n{text}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while not (m := re.search(r"^\[exit (\d+)\]$", self.screen(history=True), re.M)):
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout:g}s; the screen:\n{self.screen()}")
            time.sleep(0.1)
        return int(m.group(1))

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def terminal(tmp_path):
    opened = []

    def open_(argv, **kw) -> Terminal:
        t = Terminal(argv, tmp_path, **kw)
        opened.append(t)
        return t

    yield open_
    for t in opened:
        t.close()


def top(endpoint: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "otel_mta", "top", "--endpoint", endpoint, *args]


def status(port: int, top_n: int | None = None) -> dict:
    q = f"?top={top_n}" if top_n else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status{q}", timeout=5) as r:
        return json.loads(r.read())


def wait_status(port: int, condition, timeout: float = 60.0, what: str = "status"):
    deadline = time.monotonic() + timeout
    while True:
        doc = status(port)
        if condition(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s:\n{json.dumps(doc, indent=1)}")
        time.sleep(0.25)


def domain(doc: dict, name: str) -> dict | None:
    return next((d for d in doc["domains"] if d["domain"] == name), None)


def fits(screen: str, width: int, height: int) -> None:
    lines = screen.rstrip("\n").split("\n")
    assert len(lines) <= height, screen
    assert max(len(line) for line in lines) <= width, screen


# -- a real ZoneMTA ---------------------------------------------------------------------
@pytest.fixture
def node(zonemta_factory, smtp_sink, sidecar, tmp_path):
    """A real ZoneMTA whose remote log goes to a sidecar that also polls its API and MongoDB queue."""
    smtp_sink.reply("greylist@", "451 4.7.1 Greylisted, please try again later")
    smtp_sink.reply("nobody@", "550 5.1.1 <nobody@gone.test>: No such user here")
    remote_log_port = free_port(socket.SOCK_DGRAM)
    zm = zonemta_factory(remote_log_port=remote_log_port)
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text("sources:\n  zonemta_api: {interval: 1s}\n  mongodb: {interval: 1s}\n")
    sc = sidecar({"OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{remote_log_port}",
                  "OTEL_MTA_ZONEMTA_API_URL": zm.api_url, "OTEL_MTA_MONGODB_URI": zm.mongo_uri}, config=cfg)
    sender = "alice@sender.test"
    zm.send(sender, ["bob@fine.test"])
    zm.send(sender, ["greylist@slow.test"])
    zm.send(sender, ["nobody@gone.test"])
    # the API poller (queue sizes) and the MongoDB poller (oldest ages) see the
    # deferral each at its own next poll: wait for both
    wait_status(sc.health_port, lambda d: (domain(d, "slow.test") and domain(d, "gone.test")
                                           and any(z["zone"] == "default" and z["queue"]["deferred"]
                                                   and z["oldest_age_s"]["deferred"] is not None
                                                   for z in d["zones"])),
                what="the deferral, the rejection, the deferred queue and its age")
    return zm, sc


def test_top_live_in_a_terminal_against_a_real_zonemta(node, terminal):
    zm, sc = node
    t = terminal(top(f"127.0.0.1:{sc.health_port}"))
    screen = t.wait(lambda s: "slow.test" in s and "EXPORT" in s and s, what="zones, domains, sources, export")
    fits(screen, 80, 24)
    lines = screen.split("\n")
    # the zone with its queue: the greylisted delivery waits deferred
    zone = next(line for line in lines if line.startswith("default "))
    assert re.match(r"default\s+\d+\s+[1-9]\d*\s", zone), zone
    # the top deferring domain, with its latest reply as the logs show it
    assert re.search(r"slow\.test\s+1\s+0\s+.*451 4\.7\.1 Greylisted", screen), screen
    assert re.search(r"gone\.test\s+0\s+1\s+.*550 5\.1\.1 <\*\*\*@gone\.test>", screen), screen  # masked
    # the sources and the export line
    assert re.search(r"^remote_log\s+ok\s+", screen, re.M), screen
    assert re.search(r"^zonemta_api\s+ok\s+", screen, re.M), screen
    assert re.search(r"^mongodb\s+ok\s+", screen, re.M), screen
    assert re.search(r"^EXPORT file ok → ", screen, re.M), screen
    assert ESC in t.screen(escapes=True)    # colour: this is a terminal
    # it refreshes: the clock in the title moves
    first = lines[0]
    t.wait(lambda s: s.split("\n")[0] != first, timeout=10, what="a refresh")
    t.keys("q")
    assert t.wait_exit() == 0


def test_top_once_and_json_in_a_terminal_against_a_real_zonemta(node, terminal):
    zm, sc = node
    once = terminal(top(f"127.0.0.1:{sc.health_port}", "--once"))
    assert once.wait_exit() == 0
    screen = once.output()
    assert "slow.test" in screen and "451 4.7.1 Greylisted" in screen and "remote_log" in screen
    assert re.search(r"^EXPORT file ok", screen, re.M)
    assert ESC not in once.screen(escapes=True, history=True)   # plain text, even on a terminal
    assert max(len(line) for line in screen.split("\n")) <= 80

    js = terminal(top(f"127.0.0.1:{sc.health_port}", "--json"))
    assert js.wait_exit() == 0
    doc = json.loads(js.output())     # nothing but the JSON
    assert doc["schema"] == "otel-mta.status/v1"
    d = domain(doc, "slow.test")
    assert d["deferred"] == 1 and d["last_reply"]["outcome"] == "deferred"
    assert d["last_reply"]["reply"].startswith("451 4.7.1 Greylisted")
    [default] = [z for z in doc["zones"] if z["zone"] == "default"]
    assert default["queue"]["deferred"] >= 1 and default["oldest_age_s"]["deferred"] is not None
    assert {s["name"]: s["state"] for s in doc["sources"]} == {
        "remote_log": "ok", "zonemta_api": "ok", "mongodb": "ok", "host": "ok"}
    assert doc["export"]["state"] == "ok"


# -- ZoneMTA's encoder, no ZoneMTA ----------------------------------------------------------
def traffic(js_encode, n: int = 150) -> tuple[list[bytes], int]:
    """tools/traffic.py's messages (as the demo sends them) and their delivery attempts."""
    sys.path.insert(0, str(ROOT / "tools"))
    from traffic import generate
    entries = generate(n, seed=7)
    attempts = sum(e["action"] in ("ACCEPTED", "DEFERRED", "REJECTED") for e in entries)
    return js_encode(entries), attempts


def all_attempts(n: int):
    return lambda d: sum(i["attempts"] for i in d["sending_ips"]) == n


@pytest.fixture
def fed(sidecar, js_encode):
    def start(env: dict | None = None):
        sc = sidecar({"OTEL_MTA_HOST_METRICS": "off", **(env or {})})
        datagrams, attempts = traffic(js_encode)
        sc.send(datagrams, pause_every=50)
        wait_status(sc.health_port, all_attempts(attempts), what="every attempt counted")
        return sc
    return start


@pytest.mark.parametrize("width,height", [(80, 24), (60, 14), (120, 40)])
def test_the_screen_fits_the_terminal_columns_first(fed, terminal, width, height):
    sc = fed()
    t = terminal(top(f"127.0.0.1:{sc.health_port}"), width=width, height=height)
    screen = t.wait(lambda s: "EXPORT" in s and s, what="a frame")
    fits(screen, width, height)
    [header] = [line for line in screen.split("\n") if line.startswith("ZONE")] or [screen]
    if width < 80:   # narrow: the less important columns went, the rows stayed whole
        assert "REJECTED/m" not in header and "DELIVERED/m" in header
        assert "SOURCE" in screen and "remote_log" in screen
    else:
        assert "REJECTED/m" in header
    t.keys("q")
    assert t.wait_exit() == 0


def test_an_unreachable_sidecar_is_one_line_saying_where_it_looked(terminal):
    port = free_port()
    t = terminal(top(f"127.0.0.1:{port}"))
    screen = t.wait(lambda s: "no sidecar" in s and s, what="the message")
    text = [line for line in screen.split("\n") if line.strip()]
    assert len(text) == 1 and f"http://127.0.0.1:{port}/status" in text[0], screen
    t.keys("q")
    assert t.wait_exit() == 0
    for flag in ("--once", "--json"):
        r = subprocess.run(top(f"127.0.0.1:{port}", flag), capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and f"127.0.0.1:{port}/status" in r.stderr


def test_the_endpoint_comes_from_the_sidecars_variable(fed):
    sc = fed()
    env = {**os.environ, "OTEL_MTA_HEALTH_ENDPOINT": f"0.0.0.0:{sc.health_port}"}   # a listen address
    r = subprocess.run([sys.executable, "-m", "otel_mta", "top", "--json"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["schema"] == "otel-mta.status/v1"


def test_status_is_bounded_and_refuses_bad_requests(fed):
    sc = fed()
    assert len(status(sc.health_port)["domains"]) == 10          # the traffic fails at more domains
    small = status(sc.health_port, 2)
    assert len(small["domains"]) == 2 and len(small["sending_ips"]) == 2 and len(small["zones"]) == 2
    for bad in ("0", "51", "x"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{sc.health_port}/status?top={bad}", timeout=5)
        assert err.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as err:   # read-only
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sc.health_port}/status", data=b"{}"),
                               timeout=5)
    assert err.value.code == 405


def test_status_has_no_personal_data_beyond_the_privacy_settings(fed):
    sc = fed()
    text = json.dumps(status(sc.health_port, 50))
    assert "@" not in text.replace("***@", "")     # replies quote recipients: masked
    assert "user" not in text                      # the traffic's local parts (userNNN@...)


def test_no_recipient_domains_when_privacy_drops_recipients(sidecar, js_encode, tmp_path):
    cfg = tmp_path / "otel-mta.yaml"
    cfg.write_text("privacy: {recipient: drop}\n")
    sc = sidecar({"OTEL_MTA_HOST_METRICS": "off"}, config=cfg)
    datagrams, attempts = traffic(js_encode)
    sc.send(datagrams, pause_every=50)
    doc = wait_status(sc.health_port, all_attempts(attempts), what="every attempt counted")
    assert doc["domains"] == []
    assert "@" not in json.dumps(doc)


def test_the_sidecar_does_not_load_the_terminal_ui():
    code = ("import sys, otel_mta.app, otel_mta.cli, otel_mta.health, otel_mta.status; "
            "print(sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_failing_collector_shows_on_the_export_line_without_its_credentials(sidecar, js_encode):
    closed = free_port()
    sc = sidecar({"OTEL_MTA_HOST_METRICS": "off", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                  "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://otel:s3cret@127.0.0.1:{closed}/?token=s3cret"})
    datagrams, _ = traffic(js_encode, 20)
    sc.send(datagrams)
    doc = wait_status(sc.health_port, lambda d: d["export"]["state"] == "failing", what="the export failing")
    assert "s3cret" not in json.dumps(doc)
    assert doc["export"]["endpoint"] == f"http://127.0.0.1:{closed}/"
    r = subprocess.run(top(f"127.0.0.1:{sc.health_port}", "--once"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^EXPORT otlp_http failing → http://127\.0\.0\.1:{closed}/", r.stdout, re.M), r.stdout
