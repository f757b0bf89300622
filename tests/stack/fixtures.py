"""pytest fixtures for the end-to-end stack.

Register them for the whole suite in tests/conftest.py (needs pytest
`pythonpath = ["."]` so `tests.stack` is importable):

    pytest_plugins = ["tests.stack.fixtures"]

Every fixture skips with "run `bash tests/stack/setup.sh` first" when the piece
it needs is not installed, and fails instead when CI=true or
OTEL_MTA_STACK_REQUIRED=1, so a broken setup cannot pass as skipped in CI.
"""

from __future__ import annotations

from typing import Callable

import pytest

from .ferretdb import FerretDB
from .haraka import Haraka
from .mongo_mock import MongoReplicaSetMock
from .redis_server import RedisServer
from .smtp_sink import SmtpSink
from .udp_listener import UdpListener
from .wildduck import WildDuck
from .zonemta import ZoneMTA

__all__ = ["redis_server", "ferretdb", "mongo_mock", "smtp_sink", "remote_log_listener",
           "gelf_listener", "zonemta_factory", "zonemta", "wildduck_factory", "haraka_factory"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    """A private redis-server (Debian) on a free loopback port, for the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory) -> FerretDB:
    """FerretDB v1 (SQLite) on a free loopback port, for the session.
    Use a database name of your own per test; ZoneMTA instances get one each."""
    server = FerretDB(tmp_path_factory.mktemp("ferretdb"))
    yield server
    server.stop()


@pytest.fixture
def mongo_mock() -> MongoReplicaSetMock:
    """mockupdb primary of a 3-member replica set with MongoDB 7.0-shaped
    serverStatus / replSetGetStatus / dbStats / hello replies."""
    mock = MongoReplicaSetMock()
    yield mock
    mock.stop()


@pytest.fixture
def smtp_sink() -> SmtpSink:
    """aiosmtpd server ZoneMTA delivers to; `.reply("defer", "451 ...")` scripts answers."""
    sink = SmtpSink()
    yield sink
    sink.stop()


@pytest.fixture
def remote_log_listener() -> UdpListener:
    """Raw UDP socket on a free loopback port for ZoneMTA's log.remote datagrams."""
    listener = UdpListener()
    yield listener
    listener.stop()


@pytest.fixture
def gelf_listener() -> UdpListener:
    """Raw UDP socket on a free loopback port for ZoneMTA's GELF (zlib) datagrams."""
    listener = UdpListener()
    yield listener
    listener.stop()


@pytest.fixture
def zonemta_factory(ferretdb, smtp_sink, tmp_path_factory) -> Callable[..., ZoneMTA]:
    """Start ZoneMTA instances; all are stopped after the test.

    factory(remote_log_port=None, gelf_port=None, gelf_connection="lan",
            plugins=None, config=None, sink=smtp_sink, mongo_uri=ferretdb.uri,
            env=None) -> ZoneMTA

    Each instance gets its own redis-server (`.redis`) and its own database in
    FerretDB (`.mongo_uri`/`.mongo_db`). `plugins` is merged into ZoneMTA's
    `plugins` config; a key may be an absolute path, e.g.
    {"/abs/zonemta-plugin": {"enabled": ["main", "sender", "receiver"], ...}}.
    `config` is deep-merged over the generated config (lists replace).
    """
    started: list[tuple[ZoneMTA, RedisServer]] = []

    def start(*, remote_log_port: int | None = None, gelf_port: int | None = None,
              gelf_connection: str = "lan", plugins: dict | None = None,
              config: dict | None = None, sink: SmtpSink | None = None,
              mongo_uri: str | None = None, env: dict | None = None) -> ZoneMTA:
        workdir = tmp_path_factory.mktemp("zonemta")
        redis = RedisServer(workdir / "redis")
        sink = sink or smtp_sink
        try:
            zm = ZoneMTA(workdir, mongo_uri=mongo_uri or ferretdb.uri,
                         redis_host=redis.host, redis_port=redis.port,
                         sink_host=sink.host, sink_port=sink.port,
                         remote_log_port=remote_log_port, gelf_port=gelf_port,
                         gelf_connection=gelf_connection, plugins=plugins, config=config,
                         env=env)
        except BaseException:
            redis.stop()
            raise
        zm.redis = redis
        started.append((zm, redis))
        return zm

    yield start
    for zm, redis in reversed(started):
        zm.stop()
        redis.stop()


@pytest.fixture
def zonemta(zonemta_factory, remote_log_listener) -> ZoneMTA:
    """ZoneMTA with log.remote sent to `remote_log_listener`, mail to `smtp_sink`."""
    return zonemta_factory(remote_log_port=remote_log_listener.port)


@pytest.fixture
def wildduck_factory(ferretdb, tmp_path_factory) -> Callable[..., WildDuck]:
    """Start WildDuck instances; all are stopped after the test.

    factory(gelf_port=None, gelf_connection="lan", metrics=True, config=None,
            mongo_uri=ferretdb.uri, sender_db="zone-mta", env=None) -> WildDuck

    Each instance gets its own redis-server (`.redis`) and its own database in
    FerretDB (`.mongo_uri`/`.mongo_db`). `sender_db` is the database WildDuck
    queues forwarded mail into: a ZoneMTA's `.mongo_db` on the same FerretDB
    makes that ZoneMTA deliver it. `config` is deep-merged over the generated
    config (lists replace).
    """
    started: list[tuple[WildDuck, RedisServer]] = []

    def start(*, gelf_port: int | None = None, gelf_connection: str = "lan", metrics: bool = True,
              config: dict | None = None, mongo_uri: str | None = None, sender_db: str = "zone-mta",
              env: dict | None = None) -> WildDuck:
        workdir = tmp_path_factory.mktemp("wildduck")
        redis = RedisServer(workdir / "redis")
        try:
            wd = WildDuck(workdir, mongo_uri=mongo_uri or ferretdb.uri, redis_host=redis.host,
                          redis_port=redis.port, gelf_port=gelf_port, gelf_connection=gelf_connection,
                          metrics=metrics, config=config, sender_db=sender_db, env=env)
        except BaseException:
            redis.stop()
            raise
        wd.redis = redis
        started.append((wd, redis))
        return wd

    yield start
    for wd, redis in reversed(started):
        wd.stop()
        redis.stop()


@pytest.fixture
def haraka_factory(tmp_path_factory) -> Callable[..., Haraka]:
    """Start Haraka servers with our plugin; all are stopped after the test.

    factory(plugins=[...], config={file: text}, events_url=None, env=None) -> Haraka
    """
    started: list[Haraka] = []

    def start(*, plugins: list[str], config: dict | None = None, events_url: str | None = None,
              env: dict | None = None) -> Haraka:
        h = Haraka(tmp_path_factory.mktemp("haraka"), plugins=plugins, config=config, events_url=events_url, env=env)
        started.append(h)
        return h

    yield start
    for h in reversed(started):
        h.stop()
