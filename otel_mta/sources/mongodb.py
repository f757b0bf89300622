"""MongoDB: server health as the Collector contrib `mongodbreceiver` names it,
the replica set's members, and ZoneMTA's queue as it sits in MongoDB.

Every poll, through pymongo's asyncio client with the configured read
preference (secondaryPreferred by default, so a replica set's primary is
spared):
- serverStatus, listDatabases (names only), dbStats per database, `top` and
  `$indexStats` per collection: the contrib metrics enabled by default, same
  names, units and attributes (catalog/mongodb.yaml). `top` and `$indexStats`
  need the clusterMonitor role; without it those two metrics are left out.
- replSetGetStatus: member health and state, replication lag per member,
  election term and age (names of our own: contrib has none). A standalone
  server answers NoReplicationEnabled; the metrics are simply absent.
- ZoneMTA's queue collection (`zone-queue`): deliveries per zone and state and
  the age of the oldest active and deferred delivery per zone; the top
  destination domains per zone and state, and the last SMTP error of each top
  deferred domain (KumoMTA #183's question: which destinations hold the queue,
  and what do they answer). Only queries
  that an index of ZoneMTA's own indexes.yaml answers, forced with `hint` (a
  missing index fails the query instead of scanning the collection), each with
  maxTimeMS, a limit and a projection of small fields: message bodies (GridFS)
  are never read.

A server that is down gives mongodb.health 0 and otelmta_poller_up 0 and a
`check` line saying why; the poll is bounded by `timeout` and server selection
gives up before it, so nothing loops on exceptions.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from urllib.parse import unquote

# imported with this module, i.e. only when a MongoDB poller is on (sources/__init__.py),
# and at start: an import at the first poll would hold up the event loop
from pymongo import AsyncMongoClient, errors
from pymongo.read_preferences import ReadPreference

from otel_mta import smtp_reply
from otel_mta.privacy import TopN
from otel_mta.sources.poller import Points, PollError, Poller, StartTimes

log = logging.getLogger("otel_mta.mongodb")

# contrib: OTel namespace for service.instance.id = uuid5(ns, "address:port")
OTEL_NAMESPACE = uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320")
DEFAULT_PORT = 27017
OPCOUNTERS = ("insert", "query", "update", "delete", "getmore", "command")
TOP_OPERATIONS = {"insert": "insert", "queries": "query", "update": "update", "remove": "delete",
                  "getmore": "getmore", "commands": "command"}
STATES = {0: "STARTUP", 1: "PRIMARY", 2: "SECONDARY", 3: "RECOVERING", 5: "STARTUP2", 6: "UNKNOWN",
          7: "ARBITER", 8: "DOWN", 9: "ROLLBACK", 10: "REMOVED"}
NOT_A_REPLICA_SET = {76, 59}    # NoReplicationEnabled; CommandNotFound (e.g. FerretDB)
ACTIVE, DEFERRED = "active", "deferred"
LAST_ERROR_SAMPLE = 10   # deferred deliveries read per top domain to find its newest reply


def mongo_target(uri: str) -> tuple[str, list[tuple[str, int]], str | None]:
    """(URI without credentials and options, [(host, port)], database) without
    resolving anything (a mongodb+srv:// URI lists its SRV name)."""
    scheme, _, rest = uri.partition("://")
    netloc, _, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2]
    hosts = []
    for item in netloc.split(","):
        host, port = item, DEFAULT_PORT
        if item.startswith("["):
            host, _, tail = item[1:].partition("]")
            if tail.startswith(":") and tail[1:].isdigit():
                port = int(tail[1:])
        elif item.count(":") == 1:
            host, _, p = item.partition(":")
            port = int(p) if p.isdigit() else DEFAULT_PORT
        if host:
            hosts.append((host, port))
    database = unquote(path.partition("?")[0]) or None
    return f"{scheme}://{netloc}/{database or ''}", hosts, database


def _int(value) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(value)     # bson Int64 is an int; Decimal128 and others are rare
    except (TypeError, ValueError):
        return None


def mongo_client(uri: str, settings, timeout: float, **options):
    """(pymongo AsyncMongoClient, its read preference) for a poller of MongoDB
    (settings: config.MongoClientSettings), every wait bounded by `timeout`."""
    modes = {"primary": ReadPreference.PRIMARY, "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
             "secondary": ReadPreference.SECONDARY,
             "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
             "nearest": ReadPreference.NEAREST}
    # server selection gives up before the poll's timeout, so a dead
    # server is reported as such (refused, unreachable), not as a
    # timeout; pymongo re-checks only every 0.5 s, hence the margin
    selection = max(0.1, min(settings.server_selection_timeout, timeout * 0.8 - 0.5))
    client = AsyncMongoClient(
        uri, appname="otel-mta", tz_aware=True, connect=False,
        readPreference=settings.read_preference,
        connectTimeoutMS=int(min(settings.connect_timeout, timeout) * 1000),
        serverSelectionTimeoutMS=int(selection * 1000),
        socketTimeoutMS=int(timeout * 1000),
        maxPoolSize=4, retryReads=False, **options)
    return client, modes[settings.read_preference]


def _dig(doc, *path):
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _utc(value) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return None


class MongoDBPoller(Poller):
    name = "mongodb"

    def __init__(self, pipeline, settings, queue_size: bool = True):
        self.uri = settings.url
        target, self.hosts, uri_db = mongo_target(settings.url)
        super().__init__(pipeline, settings, target)
        self.queue_db = settings.queue_database or uri_db or "zone-mta"
        self.queue_collection = settings.queue_collection
        self._queue_name = f"queue {self.queue_db}.{self.queue_collection}"   # for notes and `check`
        self.queue_size = queue_size          # mta.queue.size too (when the API poller is off)
        self.client_options: dict = {}        # extra AsyncMongoClient options (tests: event_listeners)
        self._client = None
        self._starts = StartTimes()
        self._resource = None                 # the last server that answered
        self._summary = ""
        self._notes: list[str] = []
        self._replset: tuple | None = None    # (name, my state, members, healthy members)
        self._queue_summary: tuple | None = None
        self._rp = None

    # -- client ----------------------------------------------------------------------
    def _mongo(self):
        if self._client is None:
            self._client, self._rp = mongo_client(self.uri, self.settings, self.timeout, **self.client_options)
        return self._client

    @property
    def _max_ms(self) -> int:
        return max(100, int(self.timeout * 1000))

    async def _command(self, db: str, cmd, **kwargs):
        return await self._mongo()[db].command(cmd, read_preference=self._rp, maxTimeMS=self._max_ms, **kwargs)

    # -- poll ------------------------------------------------------------------------
    async def collect(self, points: Points) -> None:
        self._notes = []
        try:
            status = await self._command("admin", "serverStatus")
        except errors.ServerSelectionTimeoutError as err:
            raise PollError(*unreachable(err)) from None
        except errors.OperationFailure as err:
            if err.code == 18:
                raise PollError("auth", "authentication failed (user/password in the URI)") from None
            if err.code == 13:
                raise PollError("auth", "not authorized for serverStatus (needs the clusterMonitor role)") from None
            raise PollError("error", f"serverStatus failed: {err}") from None
        except errors.AutoReconnect as err:
            raise PollError("network", str(err).splitlines()[0][:300]) from None
        try:
            await self._collect(status, points)
        except errors.ExecutionTimeout:
            raise PollError("timeout", f"a command ran over maxTimeMS ({self._max_ms} ms)") from None
        except (errors.AutoReconnect, errors.ServerSelectionTimeoutError) as err:   # the server went away
            raise PollError("network", str(err).splitlines()[0][:300]) from None

    async def _collect(self, status: dict, points: Points) -> None:
        started = time.monotonic()
        res = self._server_resource(status)
        now_ns = time.time_ns()
        uptime_ms = _int(status.get("uptimeMillis"))
        if uptime_ms is None and isinstance(status.get("uptime"), (int, float)):
            uptime_ms = int(status["uptime"] * 1000)
        start = self._starts.get(res, now_ns - (uptime_ms or 0) * 1_000_000)

        def add(metric, values, value):
            points.add(metric, res, values, _int(value), start)

        add("mongodb.health", (), 1 if status.get("ok") == 1 else 0)
        add("mongodb.uptime", (), uptime_ms)
        self._server_status(status, add)
        databases = await self._databases(status, add)
        await self._top(add)
        await self._replica_set(points, res)
        await self._queue_within(points, started)
        self._summary = self._describe(status, databases)

    def _server_resource(self, status: dict):
        """Named as contrib names it: server.address and server.port from
        serverStatus.host, service.instance.id = uuid5(OTel namespace, "address:port")."""
        host = status.get("host")
        if isinstance(host, str) and host:
            address, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
            port_n = int(port) if port.isdigit() else DEFAULT_PORT
            address = address or host
        else:
            address, port_n = self.hosts[0] if self.hosts else ("localhost", DEFAULT_PORT)
        self._resource = self._resource_for(address, port_n)
        return self._resource

    def _resource_for(self, address: str, port: int):
        return self.pipeline.resources.target({
            "server.address": address, "server.port": port,
            "service.instance.id": str(uuid.uuid5(OTEL_NAMESPACE, f"{address}:{port}"))})

    def down_points(self, points: Points) -> None:
        if self._resource is None:
            address, port = self.hosts[0] if self.hosts else ("localhost", DEFAULT_PORT)
            self._resource = self._resource_for(address, port)
        points.add("mongodb.health", self._resource, (), 0)

    def _server_status(self, s: dict, add) -> None:
        if _dig(s, "storageEngine", "name") == "wiredTiger":
            miss = _int(_dig(s, "wiredTiger", "cache", "pages read into cache"))
            requested = _int(_dig(s, "wiredTiger", "cache", "pages requested from the cache"))
            if miss is not None:
                add("mongodb.cache.operations", ("miss",), miss)
                if requested is not None:
                    add("mongodb.cache.operations", ("hit",), requested - miss)
            add("mongodb.session.count", (), _dig(s, "wiredTiger", "session", "open session count"))
        add("mongodb.cursor.count", (), _dig(s, "metrics", "cursor", "open", "total"))
        add("mongodb.cursor.timeout.count", (), _dig(s, "metrics", "cursor", "timedOut"))
        lock_us = _int(_dig(s, "globalLock", "totalTime"))
        add("mongodb.global_lock.time", (), lock_us // 1000 if lock_us is not None else None)
        add("mongodb.network.io.receive", (), _dig(s, "network", "bytesIn"))
        add("mongodb.network.io.transmit", (), _dig(s, "network", "bytesOut"))
        add("mongodb.network.request.count", (), _dig(s, "network", "numRequests"))
        for op in OPCOUNTERS:
            add("mongodb.operation.count", (op,), _dig(s, "opcounters", op))

    async def _databases(self, status: dict, add) -> list[str]:
        """dbStats per database; and, as contrib does, serverStatus' connections,
        document operations and memory once per database (db.namespace)."""
        try:
            listed = await self._command("admin", "listDatabases", nameOnly=True)
        except errors.OperationFailure as err:
            self._notes.append(f"listDatabases: {_short(err)}")
            return []
        names = sorted(d["name"] for d in listed.get("databases", []) if isinstance(d, dict) and d.get("name"))
        add("mongodb.database.count", (), len(names))
        names = names[:self.settings.max_databases]
        budget = self.settings.max_collections
        for db in names:
            try:
                stats = await self._command(db, "dbStats")
            except errors.OperationFailure as err:
                self._notes.append(f"dbStats {db}: {_short(err)}")
                stats = {}
            for metric, key in (("mongodb.collection.count", "collections"), ("mongodb.data.size", "dataSize"),
                                ("mongodb.index.count", "indexes"), ("mongodb.index.size", "indexSize"),
                                ("mongodb.object.count", "objects"), ("mongodb.storage.size", "storageSize")):
                add(metric, (db,), stats.get(key))
            for ctype in ("active", "available", "current"):
                add("mongodb.connection.count", (ctype, db), _dig(status, "connections", ctype))
            for key, op in (("inserted", "insert"), ("updated", "update"), ("deleted", "delete")):
                add("mongodb.document.operation.count", (op, db), _dig(status, "metrics", "document", key))
            for mtype in ("resident", "virtual"):
                mib = _int(_dig(status, "mem", mtype))
                add("mongodb.memory.usage", (mtype, db), mib * 1048576 if mib is not None else None)
            if db != "local" and budget > 0:
                budget = await self._index_access(db, add, budget)
        return names

    async def _index_access(self, db: str, add, budget: int) -> int:
        """$indexStats per collection: accesses of all its indexes (contrib's
        mongodb.index.access.count). Index metadata only, never documents."""
        try:
            listed = await self._command(db, {"listCollections": 1, "nameOnly": True,
                                              "filter": {"type": "collection"}})
        except errors.OperationFailure as err:
            self._notes.append(f"listCollections {db}: {_short(err)}")
            return budget
        names = sorted(c["name"] for c in _dig(listed, "cursor", "firstBatch") or [] if isinstance(c, dict))
        for coll in names:
            if budget <= 0:
                break
            budget -= 1
            try:
                cursor = await self._mongo()[db].get_collection(coll, read_preference=self._rp).aggregate(
                    [{"$indexStats": {}}], maxTimeMS=self._max_ms)
                stats = await cursor.to_list(1000)
            except errors.OperationFailure as err:
                self._notes.append(f"$indexStats: {_short(err)}")
                return 0    # not supported or not allowed: the same for every collection
            total = sum(_int(_dig(s, "accesses", "ops")) or 0 for s in stats)
            add("mongodb.index.access.count", (coll, db), total)
        return budget

    async def _top(self, add) -> None:
        """`top`: time spent per operation type over all collections. MongoDB
        reports microseconds; contrib's unit is ms, so this converts."""
        try:
            top = await self._command("admin", "top")
        except errors.OperationFailure as err:
            self._notes.append(f"top: {_short(err)}")
            return
        totals = {op: 0 for op in TOP_OPERATIONS.values()}
        for ns, entry in (top.get("totals") or {}).items():
            if ns == "note" or not isinstance(entry, dict):
                continue
            for key, op in TOP_OPERATIONS.items():
                totals[op] += _int(_dig(entry, key, "time")) or 0
        for op, micros in totals.items():
            add("mongodb.operation.time", (op,), micros // 1000)

    async def _replica_set(self, points: Points, res) -> None:
        self._replset = None
        try:
            rs = await self._command("admin", "replSetGetStatus")
        except errors.OperationFailure as err:
            if err.code in NOT_A_REPLICA_SET:
                return
            self._notes.append(f"replSetGetStatus: {_short(err)}")
            return
        name = str(rs.get("set") or "")
        members = [m for m in rs.get("members") or [] if isinstance(m, dict) and m.get("name")]
        optimes = {m["name"]: _utc(m.get("optimeDate")) for m in members}
        primary = next((m for m in members if m.get("state") == 1), None)
        newest = max((t for t in optimes.values() if t), default=None)
        reference = optimes.get(primary["name"]) if primary else newest
        for m in members:
            state = STATES.get(_int(m.get("state")), "UNKNOWN")
            healthy = 1 if m.get("health") == 1 else 0
            points.add("mongodb.replset.member.health", res, (name, m["name"], state), healthy)
            optime = optimes.get(m["name"])
            if reference and optime and state not in ("ARBITER",):
                lag = max(0.0, (reference - optime).total_seconds())
                points.add("mongodb.replset.member.replication_lag", res, (name, m["name"]), lag)
        points.add("mongodb.replset.term", res, (name,), _int(rs.get("term")))
        elected = _utc(primary.get("electionDate")) if primary else None
        if elected is not None:
            age = max(0.0, (dt.datetime.now(dt.timezone.utc) - elected).total_seconds())
            points.add("mongodb.replset.election.age", res, (name,), round(age, 3))
        self._replset = (name, STATES.get(_int(rs.get("myState")), "?"), len(members),
                         sum(1 for m in members if m.get("health") == 1))

    async def _queue_within(self, points: Points, started: float) -> None:
        """The queue queries in what is left of the poll's time, less a margin:
        when they are slow the server's metrics still go out, without the queue's.
        The top domains come last, staged apart: when they run over, the
        queue's counts and ages still go out, without them."""
        self._queue_summary = None
        self._queue_zones = {}
        staged = Points()
        if not await self._within(started, self._queue(staged), f"{self._queue_name}: not queried"):
            return
        if self.settings.max_domains and self.pipeline.redactor.recipient != "drop" and self._queue_zones:
            domains = Points()
            if await self._within(started, self._queue_domains(domains, self._queue_zones),
                                  f"{self._queue_name}: top domains not queried"):
                _merge(staged, domains)
        _merge(points, staged)

    async def _within(self, started: float, work, what: str) -> bool:
        # what is left of the poll's time, less a margin for the cancelled
        # queries to unwind (~2 ms) and a busy event loop: at least 250 ms, or
        # a late wake-up fails the whole poll instead of leaving the queue out
        left = self.timeout - max(self.timeout * 0.1, 0.25) - (time.monotonic() - started)
        if left <= 0:
            work.close()   # never started
            self._notes.append(f"{what} within the poll's timeout, left out")
            return False
        try:
            async with asyncio.timeout(left):   # not wait_for: a stop()'s cancel must get through (3.11)
                return await work
        except TimeoutError:
            self._notes.append(f"{what} within the poll's timeout, left out")
            return False

    async def _queue(self, points: Points) -> bool:
        """ZoneMTA's queue: per zone, deliveries active (queued <= now) and
        deferred (queued > now) as ZoneMTA's own /counter counts them, and
        - active: seconds since the longest-waiting due delivery became due
          (now - queued), i.e. how far behind the senders are;
        - deferred: seconds since the oldest deferred delivery was queued
          (now - created), i.e. how close it is to bouncing.
        """
        coll = self._mongo()[self.queue_db].get_collection(self.queue_collection, read_preference=self._rp)
        res = self.pipeline.resources.zonemta
        ms = self._max_ms
        now = dt.datetime.now(dt.timezone.utc)
        zones: list[str] = []
        try:
            # zones by skipping through the search_next index (sendingZone first): one seek each
            flt: dict = {"sendingZone": {"$gte": ""}}
            while len(zones) < self.settings.max_zones:
                found = await coll.find(flt, {"sendingZone": 1, "_id": 0}).sort([("sendingZone", 1)]) \
                    .hint("search_next").limit(1).max_time_ms(ms).to_list(1)
                if not found or not isinstance(found[0].get("sendingZone"), str):
                    break
                zones.append(found[0]["sendingZone"])
                flt = {"sendingZone": {"$gt": zones[-1]}}
            totals = {ACTIVE: 0, DEFERRED: 0}
            per_zone: dict = {}
            for zone in zones:
                due = {"sendingZone": zone, "queued": {"$lte": now}}
                later = {"sendingZone": zone, "queued": {"$gt": now}}
                active = await coll.count_documents(due, hint="search_next", maxTimeMS=ms)
                deferred = await coll.count_documents(later, hint="search_next", maxTimeMS=ms)
                totals[ACTIVE] += active
                totals[DEFERRED] += deferred
                per_zone[zone] = {ACTIVE: active, DEFERRED: deferred}
                if self.queue_size:
                    points.add("mta.queue.size", res, (zone, ACTIVE), active)
                    points.add("mta.queue.size", res, (zone, DEFERRED), deferred)
                if active:
                    points.add("mta.queue.oldest_age", res, (zone, ACTIVE),
                               await _oldest_age(coll, due, "queued", "search_next", ms, now))
                if deferred:
                    points.add("mta.queue.oldest_age", res, (zone, DEFERRED),
                               await _oldest_age(coll, later, "created", "findall", ms, now))
        except errors.ExecutionTimeout:
            self._notes.append(f"{self._queue_name}: over maxTimeMS, left out")
            return False
        except errors.OperationFailure as err:
            if err.code == 2 and "hint" in str(err).lower():   # ZoneMTA has not created its indexes
                self._notes.append(f"{self._queue_name}: no ZoneMTA indexes, not queried")
            else:
                self._notes.append(f"queue: {_short(err)}")
            return False
        self._queue_summary = (zones, totals)
        self._queue_zones = per_zone
        return True

    async def _queue_domains(self, points: Points, zones: dict) -> bool:
        """Per zone and state, the `max_domains` destination domains with the most
        deliveries (the rest as `other`), and for each top deferred domain the
        newest SMTP reply among its LAST_ERROR_SAMPLE deferred deliveries due
        last, normalised (smtp_reply) and with addresses masked as the privacy
        policy says. Both walk search_next, whose keys hold sendingZone, queued
        and domain: the grouping reads index keys only (MongoDB covers it); the
        reply lookup fetches at most LAST_ERROR_SAMPLE documents per domain."""
        coll = self._mongo()[self.queue_db].get_collection(self.queue_collection, read_preference=self._rp)
        res = self.pipeline.resources.zonemta
        ms, n = self._max_ms, self.settings.max_domains
        now = dt.datetime.now(dt.timezone.utc)
        now_ms = now.timestamp() * 1000
        try:
            for zone, totals in zones.items():
                for state, queued in ((ACTIVE, {"$lte": now}), (DEFERRED, {"$gt": now})):
                    if not totals[state]:
                        continue
                    flt = {"sendingZone": zone, "queued": queued}
                    top = await (await coll.aggregate(
                        [{"$match": flt}, {"$group": {"_id": "$domain", "n": {"$sum": 1}}},
                         {"$sort": {"n": -1, "_id": 1}}, {"$limit": n}],
                        hint="search_next", maxTimeMS=ms)).to_list(n)
                    counted = 0
                    for row in top:
                        domain = row.get("_id")
                        count = _int(row.get("n")) or 0
                        if not isinstance(domain, str) or not domain or domain == TopN.OTHER:
                            continue
                        domain = domain.lower()
                        counted += count
                        points.add("mta.queue.domain.size", res, (zone, state, domain), count)
                        if state == DEFERRED:
                            await self._last_error(coll, points, res, zone, domain, now, now_ms)
                    if totals[state] > counted:
                        points.add("mta.queue.domain.size", res, (zone, state, TopN.OTHER), totals[state] - counted)
        except errors.ExecutionTimeout:
            self._notes.append(f"{self._queue_name}: top domains over maxTimeMS, left out")
            return False
        except errors.OperationFailure as err:
            self._notes.append(f"queue domains: {_short(err)}")
            return False
        return True

    async def _last_error(self, coll, points: Points, res, zone: str, domain: str, now, now_ms: float) -> None:
        flt = {"sendingZone": zone, "queued": {"$gt": now}, "domain": domain}
        sample = await coll.find(flt, {"_deferred.last": 1, "_deferred.response": 1, "_id": 0}) \
            .sort([("sendingZone", 1), ("queued", -1)]).hint("search_next") \
            .limit(LAST_ERROR_SAMPLE).max_time_ms(self._max_ms).to_list(LAST_ERROR_SAMPLE)
        newest = None
        for doc in sample:
            d = doc.get("_deferred")
            if isinstance(d, dict) and isinstance(d.get("response"), str) and isinstance(d.get("last"), (int, float)):
                if newest is None or d["last"] > newest["last"]:
                    newest = d
        if newest is None:
            return
        reply = smtp_reply.normalise(self.pipeline.redactor.text(newest["response"]))
        age = round(max(0.0, (now_ms - newest["last"]) / 1000), 3)
        points.add("mta.queue.domain.last_error_age", res, (zone, domain, reply or "(none)"), age)

    # -- check -----------------------------------------------------------------------
    def _describe(self, status: dict, databases: list[str]) -> str:
        version = status.get("version", "?")
        product = "FerretDB " + status["ferretdbVersion"] if status.get("ferretdbVersion") else f"MongoDB {version}"
        rs = self._replset
        kind = f"replica set {rs[0]} ({rs[1]}, {rs[3]}/{rs[2]} members healthy)" if rs else "standalone"
        parts = [f"{product}, {kind}, {len(databases)} databases"]
        q = self._queue_summary
        if q:
            zones, totals = q
            parts.append(f"{self._queue_name}: zones {', '.join(zones) or 'none'}; "
                         f"{totals[ACTIVE]} active, {totals[DEFERRED]} deferred")
        parts += self._notes[:3]
        return "; ".join(parts)

    def summary(self) -> str:
        return self._summary

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


async def _oldest_age(coll, flt: dict, field: str, index: str, ms: int, now: dt.datetime) -> float | None:
    """Seconds since `field` of the oldest delivery matching `flt`: one index
    walk (forced with `hint`) to the first document, projecting that field only."""
    first = await coll.find(flt, {field: 1, "_id": 0}).sort([(field, 1)]) \
        .hint(index).limit(1).max_time_ms(ms).to_list(1)
    when = _utc(first[0].get(field)) if first else None
    return round(max(0.0, (now - when).total_seconds()), 3) if when else None


def _merge(into: Points, staged: Points) -> None:
    for metric, per_resource in staged.data.items():
        for resource, series in per_resource.items():
            for values, value in series.items():
                into.add(metric, resource, values, value)


def _short(err) -> str:
    details = getattr(err, "details", None) or {}
    return str(details.get("codeName") or details.get("errmsg") or err).splitlines()[0][:120]


def unreachable(err) -> tuple[str, str]:
    """(reason, line) from a ServerSelectionTimeoutError's long message."""
    text = str(err)
    first = text.split(", Timeout:")[0].split(" (configured timeouts")[0]
    low = text.lower()
    if "refused" in low or "errno 111" in low:
        return "refused", f"cannot reach {first.split(': ')[0]}: connection refused"
    if "timed out" in low:
        return "timeout", f"cannot reach {first.split(': ')[0]}: timed out"
    if "authentication" in low:
        return "auth", "authentication failed"
    return "unreachable", f"no server available: {first[:200]}"
