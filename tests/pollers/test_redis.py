"""The Redis poller against real redis-server processes (Debian's package):
the contrib redisreceiver's names, units and attributes; a dead server; a
password; TLS."""
from __future__ import annotations

import time

import pytest

from otel_mta import config
from otel_mta.sources.redis import RedisPoller
from tests.pollers.conftest import area, assert_matches_catalog, closed_port, one, values
from tests.stack import paths
from tests.stack.proc import LOOPBACK, Process, free_port, port_open
from tests.stack.redis_server import RedisServer

DB = 7   # a database of the shared test Redis no other test uses


@pytest.fixture
def redis_poller(closing):
    def make(pipeline, url: str, **settings) -> RedisPoller:
        return closing(RedisPoller(pipeline, config.RedisSettings(url=url, **settings)))
    return make


class CustomRedis:
    """redis-server with extra arguments (a password, TLS)."""

    def __init__(self, workdir, *args, port: int | None = None):
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Process("redis-server", [paths.redis_server_bin(), "--bind", LOOPBACK, "--save", "",
                                             "--appendonly", "no", "--dir", workdir, *args,
                                             "--port", self.port], workdir / "redis.log", cwd=workdir)

    def wait(self, ready) -> "CustomRedis":
        self.proc.wait_until(ready, 15, "redis ready")
        return self

    def stop(self) -> None:
        self.proc.stop()


async def test_info_as_the_contrib_redisreceiver_names_it(rig, redis_poller, redis_server):
    build, export = rig
    client = redis_server.client(DB)
    client.flushdb()
    client.set("plain", "1")
    client.set("expiring", "1", ex=3600)
    client.get("plain")
    client.get("missing")
    poller = redis_poller(build(), redis_server.url(DB))
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert_matches_catalog(points)
    assert set(points) >= area("redis"), sorted(area("redis") - set(points))
    res = points["redis.uptime"][0].resource
    assert res["server.address"] == LOOPBACK and res["server.port"] == str(redis_server.port)
    assert res["redis.version"].startswith("7.") and "service.name" not in res
    assert values(points, "redis.db.keys", db=str(DB)) == {(("db", str(DB)),): 2}
    assert values(points, "redis.db.expires", db=str(DB)) == {(("db", str(DB)),): 1}
    assert one(points, "redis.db.avg_ttl", db=str(DB)).unit == "ms"   # Redis estimates it lazily: 0 at first
    assert one(points, "redis.keyspace.hits").value >= 1 and one(points, "redis.keyspace.misses").value >= 1
    assert {p.attrs["state"] for p in points["redis.cpu.time"]} >= {"sys", "user", "sys_children", "user_children"}
    maxmemory = one(points, "redis.maxmemory")
    assert maxmemory.kind == "gauge" and maxmemory.value == int(client.config_get("maxmemory")["maxmemory"])
    used = one(points, "redis.memory.used")
    assert used.kind == "gauge" and used.value > 100_000
    assert one(points, "redis.maxmemory").value == 0          # Debian's default: no limit
    connected = one(points, "redis.clients.connected")
    assert connected.kind == "sum" and not connected.monotonic and connected.value >= 1
    # totals count from the server's start (now - uptime), stable across polls
    processed = one(points, "redis.commands.processed")
    uptime = one(points, "redis.uptime").value
    assert abs(processed.start_ns - (time.time_ns() - uptime * 10**9)) < 3 * 10**9
    client.set("another", "1")
    assert await poller.poll_once()
    again = export()
    assert one(again, "redis.commands.processed").value > processed.value
    assert one(again, "redis.commands.processed").start_ns == processed.start_ns
    assert poller.summary().startswith("Redis 7.") and "keys" in poller.summary()
    client.config_set("maxmemory", str(512 * 2**20))       # the limit dashboards set memory against
    try:
        assert await poller.poll_once()
        assert one(export(), "redis.maxmemory").value == 512 * 2**20
    finally:
        client.config_set("maxmemory", "0")
    client.flushdb()


async def test_a_dead_redis_withdraws_its_series_and_comes_back(rig, redis_poller, tmp_path):
    build, export = rig
    server = RedisServer(tmp_path / "redis")
    poller = redis_poller(build(), server.url(), timeout="1s")
    try:
        assert await poller.poll_once()
        assert "redis.memory.used" in export()
        server.stop()
        started = time.monotonic()
        assert not await poller.poll_once()
        assert time.monotonic() - started < 1.5
        points = export()
        assert not set(points) & area("redis")
        assert one(points, "otelmta_poller_up", poller="redis").value == 0
        assert one(points, "otelmta_poller_failures", poller="redis").attrs["reason"] == "refused"
        assert poller.last_error == "connection refused"
        assert poller.backoff_delay() <= poller.interval * 1.1
        assert not await poller.poll_once()
        assert poller.interval * 1.8 <= poller.backoff_delay() <= poller.interval * 2.2
        revived = CustomRedis(tmp_path / "again", port=server.port).wait(lambda: _ping(server.port))
        try:
            assert await poller.poll_once(), poller.last_error
            assert one(export(), "otelmta_poller_up", poller="redis").value == 1
        finally:
            revived.stop()
    finally:
        server.stop()


async def test_check_line_for_a_redis_that_is_not_there(rig, redis_poller):
    build, _ = rig
    result = await redis_poller(build(), f"redis://{LOOPBACK}:{closed_port()}/0").check()
    assert not result.ok and result.detail == "connection refused"


async def test_password_from_the_url_never_shown(rig, redis_poller, tmp_path):
    build, export = rig
    server = CustomRedis(tmp_path, "--requirepass", "s3cret-pw")
    try:
        server.wait(lambda: port_open(server.port))
        wrong = redis_poller(build(), f"redis://:wrong-pw@{LOOPBACK}:{server.port}/0")
        result = await wrong.check()
        assert not result.ok and "authentication failed" in result.detail
        assert "wrong-pw" not in result.endpoint + result.detail
        right = redis_poller(build(), f"redis://:s3cret-pw@{LOOPBACK}:{server.port}/0")
        assert await right.poll_once(), right.last_error
        points = export()
        assert "redis.uptime" in points
        assert right.endpoint == f"redis://{LOOPBACK}:{server.port}/0"
        assert not any("s3cret" in str(p.attrs) + str(p.resource) for pts in points.values() for p in pts)
    finally:
        server.stop()


async def test_tls_with_a_ca_from_the_url(rig, redis_poller, tmp_path, tls_files):
    ca_file, cert_file, key_file = tls_files
    tls_port = free_port()
    server = CustomRedis(tmp_path / "srv", "--tls-port", str(tls_port), "--tls-cert-file", str(cert_file),
                         "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
                         "--tls-auth-clients", "no")
    try:
        server.wait(lambda: _ping(server.port))
        poller = redis_poller(build := rig[0](), f"rediss://{LOOPBACK}:{tls_port}/0?ssl_ca_certs={ca_file}")
        assert await poller.poll_once(), poller.last_error
        assert "redis.uptime" in rig[1](build)
        untrusted = redis_poller(rig[0](), f"rediss://{LOOPBACK}:{tls_port}/0")
        assert not await untrusted.poll_once()
        assert "certificate" in untrusted.last_error.lower()
    finally:
        server.stop()


def _ping(port) -> bool:
    import redis
    with redis.Redis(host=LOOPBACK, port=port, socket_timeout=1) as c:
        return bool(c.ping())
