"""Redis: `INFO` every 15 s, as the names, units and attributes of the Collector
contrib `redisreceiver` (catalog/redis.yaml), so its dashboards work.

redis-py's asyncio client talks to the server and parses INFO. TLS and
authentication come from the URL (rediss://user:password@host:port/db). The
resource is the server: server.address, server.port (a string, as contrib has
it) and redis.version; the cumulative sums start at the server's start
(now - uptime_in_seconds), so a Redis restart is a new start time.
"""
from __future__ import annotations

import errno
import time
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions

from otel_mta.sources.poller import Points, PollError, Poller, StartTimes, redact_url

# INFO field -> contrib metric (redisreceiver metric_functions.go, enabled by default,
# and redis.maxmemory, which contrib has but leaves off)
FIELDS = {
    "blocked_clients": "redis.clients.blocked",
    "client_recent_max_input_buffer": "redis.clients.max_input_buffer",
    "client_recent_max_output_buffer": "redis.clients.max_output_buffer",
    "connected_clients": "redis.clients.connected",
    "connected_slaves": "redis.slaves.connected",
    "evicted_keys": "redis.keys.evicted",
    "expired_keys": "redis.keys.expired",
    "instantaneous_ops_per_sec": "redis.commands",
    "keyspace_hits": "redis.keyspace.hits",
    "keyspace_misses": "redis.keyspace.misses",
    "latest_fork_usec": "redis.latest_fork",
    "maxmemory": "redis.maxmemory",   # optional in contrib; on here: alerts need used/max
    "master_repl_offset": "redis.replication.offset",
    "mem_fragmentation_ratio": "redis.memory.fragmentation_ratio",
    "rdb_changes_since_last_save": "redis.rdb.changes_since_last_save",
    "rejected_connections": "redis.connections.rejected",
    "repl_backlog_first_byte_offset": "redis.replication.backlog_first_byte_offset",
    "total_commands_processed": "redis.commands.processed",
    "total_connections_received": "redis.connections.received",
    "total_net_input_bytes": "redis.net.input",
    "total_net_output_bytes": "redis.net.output",
    "uptime_in_seconds": "redis.uptime",
    "used_memory": "redis.memory.used",
    "used_memory_lua": "redis.memory.lua",
    "used_memory_peak": "redis.memory.peak",
    "used_memory_rss": "redis.memory.rss",
}
CPU = {"used_cpu_sys": "sys", "used_cpu_sys_children": "sys_children",
       "used_cpu_sys_main_thread": "sys_main_thread", "used_cpu_user": "user",
       "used_cpu_user_children": "user_children", "used_cpu_user_main_thread": "user_main_thread"}
FLOATS = {"mem_fragmentation_ratio"}
REDIS_MAX_DBS = 16


class RedisPoller(Poller):
    name = "redis"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline, settings, redact_url(settings.url))
        self.url = settings.url
        parts = urlsplit(settings.url)
        self.address = parts.hostname or "localhost"
        self.port = str(parts.port or 6379)
        self._client: aioredis.Redis | None = None
        self._starts = StartTimes()
        self._last: dict = {}

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.from_url(
                self.url, socket_connect_timeout=self.timeout, socket_timeout=self.timeout,
                retry_on_timeout=False, health_check_interval=0, single_connection_client=True)
        return self._client

    async def _info(self) -> dict:
        try:
            return await self._redis().info()
        except redis.exceptions.ConnectionError as err:
            if isinstance(err, redis.exceptions.AuthenticationError):
                raise
            # the kept connection may be stale (Redis restarted since the last
            # poll): one more try on a fresh one
            await self.close()
            return await self._redis().info()

    async def collect(self, points: Points) -> None:
        try:
            info = await self._info()
        except redis.exceptions.AuthenticationError:
            raise PollError("auth", "authentication failed (user/password in the URL)") from None
        except redis.exceptions.ResponseError as err:
            raise PollError("error", f"INFO refused: {err}") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as err:
            await self.close()   # a fresh connection next time
            if _refused(err):
                raise PollError("refused", "connection refused") from None
            if isinstance(err, redis.exceptions.TimeoutError):
                raise PollError("timeout", f"no answer within {self.timeout:g}s") from None
            raise PollError("network", str(err).splitlines()[0][:300]) from None
        if not isinstance(info, dict) or "uptime_in_seconds" not in info:
            raise PollError("bad_response", "INFO without uptime_in_seconds")
        res = self.pipeline.resources.target({
            "server.address": self.address, "server.port": self.port,
            "redis.version": str(info.get("redis_version") or "unknown")})
        now = time.time_ns()
        uptime = _int(info.get("uptime_in_seconds")) or 0
        start = self._starts.get("server", now - uptime * 1_000_000_000)
        for field, metric in FIELDS.items():
            value = info.get(field)
            value = _float(value) if field in FLOATS else _int(value)
            points.add(metric, res, (), value, start)
        for field, state in CPU.items():
            points.add("redis.cpu.time", res, (state,), _float(info.get(field)), start)
        for db in range(REDIS_MAX_DBS):
            ks = info.get(f"db{db}")
            if isinstance(ks, dict):
                for key, metric in (("keys", "redis.db.keys"), ("expires", "redis.db.expires"),
                                    ("avg_ttl", "redis.db.avg_ttl")):
                    points.add(metric, res, (str(db),), _int(ks.get(key)))
        self._last = info

    def summary(self) -> str:
        i = self._last
        keys = sum(v.get("keys", 0) for k, v in i.items() if k.startswith("db") and isinstance(v, dict))
        return (f"Redis {i.get('redis_version', '?')} ({i.get('role', '?')}), "
                f"{i.get('connected_clients', '?')} clients, {i.get('used_memory_human', '?')} used, {keys} keys")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _refused(err: BaseException) -> bool:
    """redis-py wraps the socket error; find ECONNREFUSED in the chain."""
    seen = 0
    while err is not None and seen < 5:
        if getattr(err, "errno", None) == errno.ECONNREFUSED or f"Error {errno.ECONNREFUSED} " in str(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _int(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
