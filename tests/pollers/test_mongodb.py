"""The MongoDB poller. What ran against what:
- FerretDB v1.24.2 (SQLite; tests/stack): a real wire-protocol server holding
  the real ZoneMTA's database: the queue queries, dbStats, listDatabases,
  standalone handling, TLS.
- mockupdb (tests/stack/mongo_mock.py), replies shaped as MongoDB 7.0 documents
  them: replSetGetStatus, the full serverStatus; here extended with
  listDatabases, listCollections, top, $indexStats (shapes from the MongoDB
  manual) and with the answer MongoDB gives to a hint naming a missing index.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import bson  # pymongo's
import pytest
import yaml

from otel_mta import config
from otel_mta.sources.mongodb import MongoDBPoller, mongo_target
from tests.pollers.conftest import area, assert_matches_catalog, closed_port, one, until_deferral_stored, values
from tests.stack import paths
from tests.stack.proc import LOOPBACK, Process, free_port

OWN = {"mongodb.replset.member.health", "mongodb.replset.member.replication_lag", "mongodb.replset.term",
       "mongodb.replset.election.age", "mta.queue.oldest_age", "mta.queue.domain.size",
       "mta.queue.domain.last_error_age"}
CONTRIB = area("mongodb") - OWN


@pytest.fixture
def mongo_poller(closing):
    def make(pipeline, uri: str, queue_size: bool = True, listener=None, **settings) -> MongoDBPoller:
        poller = MongoDBPoller(pipeline, config.MongoDBSettings(url=uri, **settings), queue_size=queue_size)
        if listener is not None:
            poller.client_options = {"event_listeners": [listener]}
        return closing(poller)
    return make


class Commands:
    """pymongo command monitoring: every command the poller sent."""

    def __init__(self):
        self.sent: list[tuple[str, str, dict]] = []    # (database, command name, command)

    def started(self, event):
        self.sent.append((event.database_name, event.command_name, dict(event.command)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def monitoring():
    from pymongo import monitoring as m
    commands = Commands()

    class Listener(m.CommandListener):
        started, succeeded, failed = commands.started, commands.succeeded, commands.failed
    return commands, Listener()


# -- mockupdb with the rest of what mongodbreceiver asks ---------------------------------
@pytest.fixture
def full_mock(mongo_mock):
    """mongo_mock answering everything contrib's receiver reads, as the MongoDB
    manual documents the replies (listDatabases nameOnly, listCollections, top,
    $indexStats), and serverStatus' wiredTiger session and cache-hit fields."""
    I64 = bson.Int64
    status = mongo_mock._handlers["serverstatus"]

    def server_status(request):
        doc = status(request)
        doc["wiredTiger"]["cache"]["pages requested from the cache"] = 9312
        doc["wiredTiger"]["session"] = {"open session count": 17}
        return doc

    def list_databases(request):
        return {"databases": [{"name": "admin"}, {"name": "config"}, {"name": "local"}, {"name": "zone-mta"}]}

    def list_collections(request):
        db = request.namespace
        names = {"zone-mta": ["zone-queue", "mail.files", "mail.chunks"], "admin": ["system.version"],
                 "config": ["system.sessions"], "local": ["oplog.rs"]}[db]
        return {"cursor": {"id": I64(0), "ns": f"{db}.$cmd.listCollections",
                           "firstBatch": [{"name": n, "type": "collection", "options": {},
                                           "info": {"readOnly": False}} for n in names]}}

    def top(request):
        entry = {k: {"time": I64(t), "count": I64(c)} for k, t, c in (
            ("total", 9_000_000, 900), ("readLock", 2_000_000, 300), ("writeLock", 7_000_000, 600),
            ("queries", 1_500_000, 200), ("getmore", 250_000, 50), ("insert", 3_000_000, 400),
            ("update", 2_000_000, 150), ("remove", 500_000, 30), ("commands", 750_000, 70))}
        return {"totals": {"note": "all times in microseconds", "zone-mta.zone-queue": entry,
                           "zone-mta.mail.files": entry}}

    def aggregate(request):
        pipeline = request.doc.get("pipeline") or []
        db, coll = request.namespace, request.doc.get("aggregate")
        if pipeline[:1] == [{"$indexStats": {}}]:
            batch = [{"name": "_id_", "key": {"_id": 1}, "host": f"{LOOPBACK}:{mongo_mock.port}",
                      "accesses": {"ops": I64(40), "since": dt.datetime(2026, 1, 1)}},
                     {"name": "search_next", "key": {"sendingZone": 1, "queued": 1},
                      "host": f"{LOOPBACK}:{mongo_mock.port}",
                      "accesses": {"ops": I64(2), "since": dt.datetime(2026, 1, 1)}}]
            return {"cursor": {"id": I64(0), "ns": f"{db}.{coll}", "firstBatch": batch}}
        return {"ok": 0, "errmsg": "not in this recording", "code": 59, "codeName": "CommandNotFound"}

    def find(request):
        # what MongoDB answers a hint naming an index that does not exist
        return {"ok": 0, "code": 2, "codeName": "BadValue",
                "errmsg": "error processing query: ns=zone-mta.zone-queue planner returned error :: "
                          "caused by :: hint provided does not correspond to an existing index"}

    mongo_mock._handlers.update({"serverstatus": server_status, "listdatabases": list_databases,
                                 "listcollections": list_collections, "top": top, "aggregate": aggregate,
                                 "find": find})
    return mongo_mock


async def test_server_metrics_as_the_contrib_mongodbreceiver_names_them(rig, mongo_poller, full_mock):
    build, export = rig
    poller = mongo_poller(build(), full_mock.uri)
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert_matches_catalog(points)
    assert set(points) >= CONTRIB, sorted(CONTRIB - set(points))
    res = points["mongodb.health"][0].resource
    address = f"{LOOPBACK}:{full_mock.port}"
    assert res == {"server.address": LOOPBACK, "server.port": full_mock.port,
                   "service.instance.id": str(uuid.uuid5(uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320"),
                                                         address))}
    assert one(points, "mongodb.health").value == 1
    assert one(points, "mongodb.operation.count", operation="insert").value == 1520
    assert one(points, "mongodb.operation.count", operation="command").value == 48211
    assert one(points, "mongodb.database.count").value == 4
    assert one(points, "mongodb.object.count", **{"db.namespace": "zone-mta"}).value == 2311
    assert one(points, "mongodb.connection.count", type="current", **{"db.namespace": "admin"}).value == 25
    assert one(points, "mongodb.memory.usage", type="resident", **{"db.namespace": "local"}).value == 187 * 1048576
    assert one(points, "mongodb.cache.operations", type="miss").value == 312
    assert one(points, "mongodb.cache.operations", type="hit").value == 9312 - 312
    assert one(points, "mongodb.session.count").value == 17
    # top reports microseconds; the contrib unit is ms (two namespaces of 3 s of inserts)
    assert one(points, "mongodb.operation.time", operation="insert").value == 6000
    assert one(points, "mongodb.operation.time", operation="delete").value == 1000
    assert one(points, "mongodb.index.access.count", collection="zone-queue",
               **{"db.namespace": "zone-mta"}).value == 42
    assert "local" not in {p.attrs["db.namespace"] for p in points["mongodb.index.access.count"]}
    # counters count from the server's start
    uptime_ms = one(points, "mongodb.uptime").value
    start = one(points, "mongodb.operation.count", operation="insert").start_ns
    assert abs(start - (time.time_ns() - uptime_ms * 1_000_000)) < 3 * 10**9
    # ZoneMTA's queue: MongoDB refused the hinted queries (no such index), so no
    # queue metrics, and no query ran without its hint
    assert not {"mta.queue.size", "mta.queue.oldest_age"} & set(points)
    assert "no ZoneMTA indexes, not queried" in poller.summary()
    assert full_mock.calls.count("find") == 1


async def test_replica_set_members_lag_and_elections(rig, mongo_poller, mongo_mock):
    build, export = rig
    mongo_mock.members[1]["lag_s"] = 42
    mongo_mock.members[2]["health"] = 0
    poller = mongo_poller(build(), mongo_mock.uri)
    assert await poller.poll_once(), poller.last_error
    points = export()
    me, lagging, down = (m["name"] for m in mongo_mock.members)
    health = {(p.attrs["mongodb.replset.member"], p.attrs["mongodb.replset.member.state"]): p.value
              for p in points["mongodb.replset.member.health"]}
    assert health == {(me, "PRIMARY"): 1, (lagging, "SECONDARY"): 1, (down, "DOWN"): 0}
    assert {p.attrs["mongodb.replset.name"] for p in points["mongodb.replset.member.health"]} == {"rs0"}
    lag = {p.attrs["mongodb.replset.member"]: p.value for p in points["mongodb.replset.member.replication_lag"]}
    assert lag[me] == 0 and 41 <= lag[lagging] <= 43
    assert one(points, "mongodb.replset.term").value == 3
    assert 0 <= one(points, "mongodb.replset.election.age").value < 60
    assert "replica set rs0 (PRIMARY, 2/3 members healthy)" in poller.summary()
    # a failover: the lagging member catches up, the state changes follow
    mongo_mock.members[1]["lag_s"] = 0
    mongo_mock.members[2]["health"] = 1
    assert await poller.poll_once()
    points = export()
    assert len(points["mongodb.replset.member.health"]) == 3
    assert all(p.value == 1 for p in points["mongodb.replset.member.health"])
    assert max(p.value for p in points["mongodb.replset.member.replication_lag"]) <= 1


async def test_a_standalone_server_is_clean(rig, mongo_poller, ferretdb):
    """FerretDB answers replSetGetStatus with CommandNotFound, MongoDB standalone
    with NoReplicationEnabled: no replica-set metrics, no error."""
    build, export = rig
    ferretdb.client()["standalone-test"]["things"].insert_one({"a": 1})
    poller = mongo_poller(build(), ferretdb.uri + "standalone-test")
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert_matches_catalog(points)
    assert not {n for n in points if n.startswith("mongodb.replset")}
    assert one(points, "mongodb.health").value == 1
    assert one(points, "mongodb.object.count", **{"db.namespace": "standalone-test"}).value == 1
    assert one(points, "mongodb.collection.count", **{"db.namespace": "standalone-test"}).value == 1
    assert "FerretDB v1.24.2, standalone" in poller.summary()


# -- ZoneMTA's queue ---------------------------------------------------------------
def zonemta_indexes() -> dict:
    """ZoneMTA's own indexes for its queue collection (its indexes.yaml)."""
    doc = yaml.safe_load((paths.zonemta_dir() / "indexes.yaml").read_text())
    return {i["index"]["name"]: list(i["index"]["key"]) for i in doc["indexes"]
            if i.get("key") == "collection"}


def assert_indexed_and_bounded(commands: Commands, db: str, coll: str) -> int:
    """Every query on the queue uses one of ZoneMTA's indexes by hint, with its
    filter and sort on a prefix of that index, maxTimeMS, a limit and a
    projection of small fields; nothing touches the GridFS bodies."""
    indexes = zonemta_indexes()
    checked = 0
    for database, name, cmd in commands.sent:
        target = cmd.get(name)
        if database == db and isinstance(target, str) and target.startswith("mail."):
            assert name in ("listCollections", "aggregate") and cmd.get("pipeline") == [{"$indexStats": {}}], cmd
        if database != db or target != coll:
            continue
        checked += 1
        assert cmd.get("maxTimeMS"), cmd
        hint = cmd.get("hint")
        assert hint in indexes, cmd
        key = indexes[hint]
        if name == "find" and "domain" in cmd["filter"]:     # a top domain's last reply
            flt, sort = cmd["filter"], list(cmd.get("sort", {}))
            assert cmd.get("limit") == 10 and set(cmd["projection"]) == {"_id", "_deferred.last", "_deferred.response"}
            # equality on sendingZone, range and order on queued, domain tested on the index key
            assert hint == "search_next" and sort == key[:2] and set(flt) == {"sendingZone", "queued", "domain"}, cmd
            continue
        if name == "find":
            flt, sort = cmd["filter"], list(cmd.get("sort", {}))
            assert cmd.get("limit") == 1 and cmd.get("projection"), cmd
            assert set(cmd["projection"]) <= {"_id", "sendingZone", "queued", "created"}, cmd
        elif name == "aggregate" and len(cmd["pipeline"]) == 4:    # top domains: index keys only
            flt, sort = cmd["pipeline"][0]["$match"], []
            assert cmd["pipeline"][1] == {"$group": {"_id": "$domain", "n": {"$sum": 1}}}, cmd
            assert list(cmd["pipeline"][3]) == ["$limit"] and "domain" in key, cmd
        elif name == "aggregate":          # count_documents
            flt, sort = cmd["pipeline"][0]["$match"], []
            assert [list(s)[0] for s in cmd["pipeline"][1:]] == ["$group"], cmd
        else:
            raise AssertionError(f"unexpected {name} on the queue: {cmd}")
        fields = list(dict.fromkeys(list(flt) + sort))
        if hint == "findall":    # walks the created index; the rest filters while it walks
            assert sort == ["created"], cmd
        else:
            assert fields == key[:len(fields)], (fields, key, cmd)
    return checked


async def test_zonemta_queue_in_its_real_database(rig, mongo_poller, zonemta, smtp_sink):
    """The real ZoneMTA's queue on FerretDB: a deferred delivery is counted and
    aged from when it was queued."""
    build, export = rig
    smtp_sink.reply("later", "451 4.3.0 Try again later")
    sent = time.time()
    zonemta.send("sender@example.com", ["later@example.org"])
    smtp_sink.wait_for_refused(1)
    # the poller counts active, then deferred: one poll while the deferral is being
    # stored can count the delivery in both states, so poll once it is stored
    await until_deferral_stored(zonemta)
    commands, listener = monitoring()
    poller = mongo_poller(build(), zonemta.mongo_uri, listener=listener)
    assert await poller.poll_once(), poller.last_error
    points = export()
    deferred = values(points, "mta.queue.size", **{"mta.queue.state": "deferred"})
    assert deferred == {(("mta.queue.state", "deferred"), ("mta.zone", "default")): 1}
    assert values(points, "mta.queue.size", **{"mta.queue.state": "active"}) == {
        (("mta.queue.state", "active"), ("mta.zone", "default")): 0}
    age = one(points, "mta.queue.oldest_age", **{"mta.zone": "default", "mta.queue.state": "deferred"})
    assert age.unit == "s" and 0 <= age.value <= time.time() - sent + 1
    assert age.resource == poller.pipeline.resources.zonemta.attrs
    assert not values(points, "mta.queue.oldest_age", **{"mta.queue.state": "active"})
    assert f"queue {zonemta.mongo_db}.zone-queue: zones default; 0 active, 1 deferred" in poller.summary()
    assert assert_indexed_and_bounded(commands, zonemta.mongo_db, "zone-queue") >= 5


async def test_queue_ages_and_counts_per_zone_and_state(rig, mongo_poller, ferretdb):
    """Deliveries shaped as ZoneMTA's mail-queue.js writes them, under ZoneMTA's
    indexes: ages of the longest-waiting active and oldest deferred per zone."""
    build, export = rig
    db_name = f"zq-{uuid.uuid4().hex[:6]}"
    coll = ferretdb.client()[db_name]["zone-queue"]
    for name, key in zonemta_indexes().items():
        coll.create_index([(k, 1) for k in key], name=name)
    now = dt.datetime.now(dt.timezone.utc)

    def delivery(zone, seq, queued_s, created_s, deferred=0):
        doc = {"id": f"18f0c0ffee{seq:04x}", "seq": "001", "domain": "example.org", "sendingZone": zone,
               "recipient": "someone@example.org", "locked": False, "lockTime": 0, "assigned": "no",
               "queued": now + dt.timedelta(seconds=queued_s), "created": now - dt.timedelta(seconds=created_s)}
        if deferred:
            doc["_deferred"] = {"first": 0, "count": deferred, "last": 0, "next": 0, "response": "451"}
        return doc

    coll.insert_many([
        delivery("default", 1, -30, 40),                 # due for 30 s
        delivery("default", 2, -5, 5),
        delivery("default", 3, 600, 7200, deferred=3),   # queued 2 h ago, retry in 10 min
        delivery("default", 4, 60, 900, deferred=1),
        delivery("bulk", 5, 300, 86400, deferred=9),     # a day old
    ])
    commands, listener = monitoring()
    poller = mongo_poller(build(), ferretdb.uri + db_name, listener=listener)
    assert await poller.poll_once(), poller.last_error
    points = export()
    sizes = {(p.attrs["mta.zone"], p.attrs["mta.queue.state"]): p.value for p in points["mta.queue.size"]}
    assert sizes == {("default", "active"): 2, ("default", "deferred"): 2,
                     ("bulk", "active"): 0, ("bulk", "deferred"): 1}
    ages = {(p.attrs["mta.zone"], p.attrs["mta.queue.state"]): p.value for p in points["mta.queue.oldest_age"]}
    assert set(ages) == {("default", "active"), ("default", "deferred"), ("bulk", "deferred")}
    assert 30 <= ages[("default", "active")] < 35
    assert 7200 <= ages[("default", "deferred")] < 7205
    assert 86400 <= ages[("bulk", "deferred")] < 86405
    assert assert_indexed_and_bounded(commands, db_name, "zone-queue") >= 9
    # with the API poller on, mta.queue.size is its alone; the ages stay
    only_ages = mongo_poller(build(), ferretdb.uri + db_name, queue_size=False)
    assert await only_ages.poll_once()
    points = export()
    assert "mta.queue.size" not in points and len(points["mta.queue.oldest_age"]) == 3


async def test_top_destination_domains_and_their_last_error_from_the_real_zonemta(
        rig, mongo_poller, zonemta, smtp_sink):
    """The real ZoneMTA defers mail to two destinations with different replies:
    the queue's top domains and what each last answered, as ZoneMTA stored it."""
    build, export = rig
    smtp_sink.reply("slow.example", "421 4.7.0 Too many connections from 192.0.2.1, session a1b2c3d4e5f6")
    smtp_sink.reply("grey.example", "451 4.7.1 Greylisted, try again later")
    zonemta.send("sender@example.com", ["a@slow.example", "b@slow.example", "c@grey.example"])
    smtp_sink.wait_for_refused(3)
    commands, listener = monitoring()
    poller = mongo_poller(build(), zonemta.mongo_uri, listener=listener)
    deadline = time.time() + 20
    while True:
        assert await poller.poll_once(), poller.last_error
        points = export()
        sizes = {p.attrs["mta.recipient.domain"]: p.value for p in points.get("mta.queue.domain.size", [])
                 if p.attrs["mta.queue.state"] == "deferred"}
        if sizes == {"slow.example": 2, "grey.example": 1} or time.time() > deadline:
            break
    assert sizes == {"slow.example": 2, "grey.example": 1}
    errors = {p.attrs["mta.recipient.domain"]: p for p in points["mta.queue.domain.last_error_age"]}
    assert set(errors) == {"slow.example", "grey.example"}
    assert errors["slow.example"].attrs["mta.smtp.response"].endswith(
        "421 4.7.0 Too many connections from <ip>, session <id>")
    assert errors["grey.example"].attrs["mta.smtp.response"].endswith("451 4.7.1 Greylisted, try again later")
    assert all(p.attrs["mta.zone"] == "default" and 0 <= p.value < 60 and p.unit == "s" for p in errors.values())
    assert_matches_catalog(points)
    assert assert_indexed_and_bounded(commands, zonemta.mongo_db, "zone-queue") >= 7


async def test_top_domains_are_bounded_and_the_rest_is_other(rig, mongo_poller, ferretdb):
    """max_domains per zone and state, the rest as `other` (the sum stays the
    queue size); the newest reply of each top deferred domain, addresses masked."""
    build, export = rig
    db_name = f"zd-{uuid.uuid4().hex[:6]}"
    coll = ferretdb.client()[db_name]["zone-queue"]
    for name, key in zonemta_indexes().items():
        coll.create_index([(k, 1) for k in key], name=name)
    now = dt.datetime.now(dt.timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    docs = []

    def add(domain, due_in_s, last_ago_s=None, response=None, zone="default"):
        doc = {"id": f"18f0{len(docs):012x}", "seq": "001", "domain": domain, "sendingZone": zone,
               "recipient": f"x@{domain}", "locked": False, "lockTime": 0, "assigned": "no",
               "queued": now + dt.timedelta(seconds=due_in_s), "created": now - dt.timedelta(hours=1)}
        if response:
            doc["_deferred"] = {"first": now_ms - 3_600_000, "count": 2, "last": now_ms - last_ago_s * 1000,
                                "next": now_ms + due_in_s * 1000, "response": response}
        docs.append(doc)

    for i in range(3):
        add("gmail.com", 600 + i, 100 + i, "421 4.7.28 Our system has detected an unusual rate from 192.0.2.7")
    add("gmail.com", 60, 30, "421 4.7.28 Rate limited for <bob@gmail.com> id 9f8e7d6c5b4a")   # newest, due soonest
    for i in range(2):
        add("yahoo.com", 300, 500, "451 4.7.1 Greylisted")
    add("web.de", 300, 50, "450 4.2.1 Mailbox busy")
    for i in range(4):
        add("example.net", -10)       # active, due now
    add("example.org", -10)
    coll.insert_many(docs)
    commands, listener = monitoring()
    poller = mongo_poller(build(), ferretdb.uri + db_name, listener=listener, max_domains=2)
    assert await poller.poll_once(), poller.last_error
    points = export()
    sizes = {(p.attrs["mta.queue.state"], p.attrs["mta.recipient.domain"]): p.value
             for p in points["mta.queue.domain.size"]}
    assert sizes == {("deferred", "gmail.com"): 4, ("deferred", "yahoo.com"): 2, ("deferred", "other"): 1,
                     ("active", "example.net"): 4, ("active", "example.org"): 1}
    replies = {p.attrs["mta.recipient.domain"]: (p.attrs["mta.smtp.response"], p.value)
               for p in points["mta.queue.domain.last_error_age"]}
    assert set(replies) == {"gmail.com", "yahoo.com"}       # top deferred domains only
    assert replies["gmail.com"][0] == "421 4.7.28 Rate limited for <***@gmail.com> id <id>"
    assert 30 <= replies["gmail.com"][1] < 35
    assert replies["yahoo.com"][0] == "451 4.7.1 Greylisted" and 500 <= replies["yahoo.com"][1] < 505
    assert assert_indexed_and_bounded(commands, db_name, "zone-queue") >= 8

    none = mongo_poller(build(), ferretdb.uri + db_name, max_domains=0)
    assert await none.poll_once()
    points = export()
    assert "mta.queue.domain.size" not in points and "mta.queue.size" in points
    dropped = build()
    from otel_mta.privacy import Redactor
    dropped.redactor = Redactor(recipient="drop")      # privacy.recipient: drop sends no domain at all
    no_domains = mongo_poller(dropped, ferretdb.uri + db_name)
    assert await no_domains.poll_once()
    points = export()
    assert "mta.queue.domain.size" not in points and "mta.queue.domain.last_error_age" not in points


async def test_slow_domain_queries_leave_only_the_domains_out(rig, mongo_poller, ferretdb, monkeypatch):
    build, export = rig
    db_name = f"zs-{uuid.uuid4().hex[:6]}"
    coll = ferretdb.client()[db_name]["zone-queue"]
    for name, key in zonemta_indexes().items():
        coll.create_index([(k, 1) for k in key], name=name)
    coll.insert_one({"id": "18f000000000001", "seq": "001", "domain": "example.org", "sendingZone": "default",
                     "recipient": "x@example.org", "locked": False, "lockTime": 0, "assigned": "no",
                     "queued": dt.datetime.now(dt.timezone.utc), "created": dt.datetime.now(dt.timezone.utc)})
    poller = mongo_poller(build(), ferretdb.uri + db_name, timeout="1s")

    async def hang(points, zones):
        await asyncio.sleep(5)
    monkeypatch.setattr(poller, "_queue_domains", hang)
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert "mta.queue.size" in points and "mta.queue.domain.size" not in points
    assert f"queue {db_name}.zone-queue: top domains not queried within the poll's timeout, left out" \
        in poller.summary()


# -- failures ----------------------------------------------------------------------
async def test_a_down_server_is_a_health_signal_not_an_exception(rig, mongo_poller):
    build, export = rig
    port = closed_port()
    poller = mongo_poller(build(), f"mongodb://{LOOPBACK}:{port}/zone-mta", timeout="2s")
    started = time.monotonic()
    result = await poller.check()
    assert time.monotonic() - started < 2.5
    assert not result.ok and result.detail == f"cannot reach {LOOPBACK}:{port}: connection refused"
    points = export()
    health = one(points, "mongodb.health")
    assert health.value == 0 and health.resource["server.address"] == LOOPBACK
    assert health.resource["server.port"] == port
    assert one(points, "otelmta_poller_up", poller="mongodb").value == 0
    assert one(points, "otelmta_poller_failures", poller="mongodb").attrs["reason"] == "refused"


async def test_a_hung_server_is_bounded_by_the_timeout(rig, mongo_poller, blackhole):
    build, export = rig
    poller = mongo_poller(build(), f"mongodb://{LOOPBACK}:{blackhole.port}/?directConnection=true",
                          timeout="1s")
    started = time.monotonic()
    assert not await poller.poll_once()
    assert time.monotonic() - started < 1.5
    assert poller.last_error
    assert one(export(), "mongodb.health").value == 0


async def test_a_server_going_away_withdraws_its_series(rig, mongo_poller, mongo_mock):
    build, export = rig
    poller = mongo_poller(build(), mongo_mock.uri, timeout="1s")
    assert await poller.poll_once()
    assert "mongodb.operation.count" in export()
    mongo_mock.stop()
    assert not await poller.poll_once()
    points = export()
    assert set(points) & area("mongodb") == {"mongodb.health"}
    assert one(points, "mongodb.health").value == 0


async def test_tls_with_the_ca_in_the_uri(rig, mongo_poller, tmp_path, tls_files):
    ca_file, cert_file, key_file = tls_files
    port = free_port()
    (tmp_path / "data").mkdir()
    server = Process("ferretdb-tls", [
        paths.ferretdb_bin(), "--handler=sqlite", f"--sqlite-url=file:{tmp_path / 'data'}/",
        "--listen-addr=", f"--listen-tls={LOOPBACK}:{port}", f"--listen-tls-cert-file={cert_file}",
        f"--listen-tls-key-file={key_file}", f"--state-dir={tmp_path}", "--debug-addr=-",
        "--telemetry=disable", "--log-level=warn"], tmp_path / "ferretdb.log", cwd=tmp_path)
    try:
        from tests.stack.proc import port_open
        server.wait_until(lambda: port_open(port), 30, "TLS port")
        build, export = rig
        uri = f"mongodb://{LOOPBACK}:{port}/?tls=true&tlsCAFile={ca_file}&directConnection=true"
        poller = mongo_poller(build(), uri)
        assert await poller.poll_once(), poller.last_error
        assert one(export(), "mongodb.health").value == 1
        assert poller.endpoint == f"mongodb://{LOOPBACK}:{port}/"
        untrusted = mongo_poller(build(), f"mongodb://{LOOPBACK}:{port}/?tls=true&directConnection=true",
                                 timeout="2s")
        assert not await untrusted.poll_once()
        assert "certificate" in untrusted.last_error.lower()
    finally:
        server.stop()


def test_targets_never_show_credentials():
    assert mongo_target("mongodb://user:p%40ss@db1:27018,db2/zone-mta?replicaSet=rs0&authSource=admin") == (
        "mongodb://db1:27018,db2/zone-mta", [("db1", 27018), ("db2", 27017)], "zone-mta")
    assert mongo_target("mongodb+srv://u:p@cluster0.example.net/")[0] == "mongodb+srv://cluster0.example.net/"
    assert mongo_target("mongodb://[::1]:27019/")[1] == [("::1", 27019)]


async def test_a_user_without_clustermonitor_gets_a_clear_line(rig, mongo_poller, mongo_mock):
    """What mongod answers a user without the clusterMonitor role."""
    build, export = rig
    mongo_mock._handlers["serverstatus"] = lambda request: {
        "ok": 0, "code": 13, "codeName": "Unauthorized",
        "errmsg": "not authorized on admin to execute command { serverStatus: 1 }"}
    result = await mongo_poller(build(), mongo_mock.uri).check()
    assert not result.ok
    assert result.detail == "not authorized for serverStatus (needs the clusterMonitor role)"
    assert one(export(), "otelmta_poller_failures", poller="mongodb").attrs["reason"] == "auth"


async def test_slow_queue_queries_leave_the_queue_out_not_the_server(rig, mongo_poller, full_mock):
    build, export = rig

    def slow_find(request):
        time.sleep(2)
        return {"cursor": {"id": bson.Int64(0), "ns": "zone-mta.zone-queue", "firstBatch": [{"sendingZone": "a"}]}}

    full_mock._handlers["find"] = slow_find
    poller = mongo_poller(build(), full_mock.uri, timeout="1s")
    started = time.monotonic()
    assert await poller.poll_once(), poller.last_error
    assert time.monotonic() - started < 1.2
    points = export()
    assert one(points, "mongodb.health").value == 1 and "mongodb.operation.count" in points
    assert not {"mta.queue.size", "mta.queue.oldest_age"} & set(points)
    assert "queue zone-mta.zone-queue: not queried within the poll's timeout, left out" in poller.summary()
