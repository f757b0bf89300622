"""The host poller with real psutil on this machine, and real processes of the
mail stack (redis-server, ZoneMTA) matched by the default patterns."""
from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import threading
import time

import psutil
import pytest

from otel_mta import config
from otel_mta.sources.host import TCP_STATES, HostPoller
from tests.pollers.conftest import area, assert_matches_catalog, one
from tests.stack.redis_server import RedisServer

SYSTEM = {n for n in area("host") if n.startswith("system.")}
PROCESS = {n for n in area("host") if n.startswith("process.")}


@pytest.fixture
def host_poller(closing):
    def make(pipeline, **settings) -> HostPoller:
        return closing(HostPoller(pipeline, config.HostSettings(**settings)))
    return make


def processes(points: dict) -> dict:
    """{pid: {metric: [Point]}} of the process resources."""
    out: dict = {}
    for name in PROCESS:
        for p in points.get(name, []):
            out.setdefault(p.resource["process.pid"], {}).setdefault(name, []).append(p)
    return out


async def test_host_metrics_as_the_contrib_hostmetricsreceiver_names_them(rig, host_poller, redis_server):
    build, export = rig
    poller = host_poller(build())
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert_matches_catalog(points)
    assert set(points) >= SYSTEM, sorted(SYSTEM - set(points))
    host = points["system.cpu.time"][0].resource
    assert host["host.name"] and "service.name" not in host and "process.pid" not in host
    assert {p.attrs["state"] for p in points["system.cpu.time"]} == {
        "idle", "interrupt", "nice", "softirq", "steal", "system", "user", "wait"}
    assert {p.attrs["cpu"] for p in points["system.cpu.time"]} == {str(i) for i in range(psutil.cpu_count())}
    boot = int(psutil.boot_time() * 1e9)
    assert all(p.start_ns == boot for p in points["system.cpu.time"])
    assert one(points, "system.cpu.logical.count").value == psutil.cpu_count()
    memory = {p.attrs["state"]: p.value for p in points["system.memory.usage"]}
    assert set(memory) == {"used", "free", "buffered", "cached", "slab_reclaimable", "slab_unreclaimable"}
    assert 0 < memory["used"] < psutil.virtual_memory().total
    assert one(points, "system.cpu.load_average.1m").value >= 0
    fs = {(p.attrs["mountpoint"], p.attrs["state"]): p.value for p in points["system.filesystem.usage"]}
    mount = next(m for m, _ in fs)
    assert fs[(mount, "used")] + fs[(mount, "free")] + fs[(mount, "reserved")] == \
        psutil.disk_usage(mount).total
    assert {p.attrs["direction"] for p in points["system.network.io"]} == {"receive", "transmit"}
    assert "lo" in {p.attrs["device"] for p in points["system.network.io"]}
    connections = {p.attrs["state"]: p.value for p in points["system.network.connections"]}
    assert set(TCP_STATES) <= set(connections) and connections["LISTEN"] >= 1
    assert {p.attrs["protocol"] for p in points["system.network.connections"]} == {"tcp"}
    # the test Redis is one of the mail stack's processes
    redis = processes(points)[redis_server.proc.pid]
    assert set(redis) == PROCESS, sorted(PROCESS - set(redis))
    res = redis["process.threads"][0].resource
    assert res["process.executable.name"] == "redis-server" and res["process.owner"] == getpass.getuser()
    # Debian's redis-server is a link to redis-check-rdb: the path is the real file
    assert res["process.executable.path"] == os.path.realpath(shutil.which("redis-server"))
    assert res["process.command"].startswith(("redis-server", "/usr/bin/redis-server"))
    assert "process.command_line" not in res
    created = int(psutil.Process(redis_server.proc.pid).create_time() * 1e9)
    assert all(p.start_ns == created for p in redis["process.cpu.time"])
    assert {p.attrs["state"] for p in redis["process.cpu.time"]} == {"user", "system", "wait"}
    assert redis["process.memory.usage"][0].value > 1 << 20
    assert redis["process.open_file_descriptors"][0].value >= 3
    assert "redis-server (" in poller.summary()


async def test_processes_that_end_stop_being_exported(rig, host_poller, tmp_path):
    build, export = rig
    poller = host_poller(build(), processes=[r"redis-server\b"])
    server = RedisServer(tmp_path / "redis")
    try:
        assert await poller.poll_once()
        assert server.proc.pid in processes(export())
    finally:
        server.stop()
    assert await poller.poll_once()
    assert server.proc.pid not in processes(export())


async def test_zonemta_processes_by_their_title(rig, host_poller, zonemta):
    """ZoneMTA names its processes `zone-mta: master process`, `zone-mta:
    sender/<zone>`, ...; the default pattern finds every one of them."""
    build, export = rig
    poller = host_poller(build())
    assert await poller.poll_once()
    commands = {p.resource.get("process.command") for p in export().get("process.threads", [])}
    assert "zone-mta: master process" in commands, commands
    assert any(c.startswith("zone-mta: sender/") for c in commands if c), commands
    assert "zone-mta (" in poller.summary()


async def test_a_stuck_poll_is_skipped_not_stacked(rig, host_poller, monkeypatch):
    build, export = rig
    poller = host_poller(build(), timeout="200ms")
    release = threading.Event()
    real = poller._read
    threads = []

    def slow():
        threads.append(threading.get_ident())
        release.wait(10)
        return real()

    monkeypatch.setattr(poller, "_read", slow)
    assert not await poller.poll_once()
    assert poller.last_error == "no answer within 0.2s"
    assert not await poller.poll_once()
    assert poller.last_error == "the previous poll is still running"
    await _until(lambda: threads, "the stuck read started")
    assert len(threads) == 1
    release.set()
    await _until(poller._busy.done, "the stuck read ended")
    monkeypatch.setattr(poller, "_read", real)
    # the real read as the sidecar runs it: under load it takes over 1 s here, well past 0.2 s
    monkeypatch.setattr(poller, "timeout", config.HostSettings().timeout)
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert one(points, "otelmta_poller_up", poller="host").value == 1
    reasons = {p.attrs["reason"]: p.value for p in points["otelmta_poller_failures"] if p.attrs["poller"] == "host"}
    assert reasons == {"timeout": 1, "overrun": 1}


async def _until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:g}s for: {what}"
        await asyncio.sleep(0.02)


def test_patterns_match_names_and_titles():
    poller = HostPoller.__new__(HostPoller)
    import re
    poller.patterns = [re.compile(p, re.IGNORECASE) for p in config.HostSettings().processes]
    assert poller.match("node", ["zone-mta: sender/default"]) == r"zone-mta\b"
    assert poller.match("mongod", ["/usr/bin/mongod", "--config", "/etc/mongod.conf"]) == r"mongod\b"
    assert poller.match("redis-server", ["/usr/bin/redis-server 127.0.0.1:6379"]) == r"redis-server\b"
    assert poller.match("Haraka", ["Haraka"]) == r"haraka\b"
    assert poller.match("node", ["wildduck: master"]) == r"wildduck\b"
    # not: a tool that merely mentions one of them
    assert poller.match("mongodb-exporter", ["mongodb-exporter", "--mongodb.uri=mongodb://"]) is None
    assert poller.match("python3", ["python3", "-m", "otel_mta", "run"]) is None


async def test_processes_only_when_a_node_agent_has_the_rest(rig, host_poller, redis_server):
    build, export = rig
    poller = host_poller(build(), system=False)
    assert await poller.poll_once()
    points = export()
    assert not [n for n in points if n.startswith("system.")]
    assert redis_server.proc.pid in processes(points)
    assert poller.summary().startswith("processes: ")
    assert config.load(environ={"OTEL_MTA_HOST_SYSTEM_METRICS": "off"}).sources.host.system is False
