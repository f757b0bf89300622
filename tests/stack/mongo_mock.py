"""A MongoDB replica-set member simulated with mockupdb, for what FerretDB lacks.

FerretDB (our real stand-in) has no replSetGetStatus and a serverStatus without
connections/opcounters/mem/repl/wiredTiger sections. This server answers those
commands with documents shaped like MongoDB 7.0's, field by field as the
MongoDB manual documents them (serverStatus, replSetGetStatus, dbStats,
listDatabases, hello),
with BSON types as mongod sends them (Int64 for NumberLong counters, Timestamp
optimes, UTC datetimes). It is a recording, not a database: any other command
gets mongod's real CommandNotFound error (code 59).

The replies are rebuilt on each request from plain attributes, so a test can
change state between polls, e.g. `mock.members[1]["lag_s"] = 42` or
`mock.opcounters["insert"] += 10`.
"""

from __future__ import annotations

import datetime as dt
import time

from . import paths
from .proc import LOOPBACK, free_port

MONGODB_VERSION = "7.0.14"
MAX_WIRE_VERSION = 21  # MongoDB 7.0

STATE_CODES = {"STARTUP": 0, "PRIMARY": 1, "SECONDARY": 2, "RECOVERING": 3, "STARTUP2": 5,
               "UNKNOWN": 6, "ARBITER": 7, "DOWN": 8, "ROLLBACK": 9, "REMOVED": 10}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class MongoReplicaSetMock:
    """One member (the primary by default) of a three-member replica set.

    Attributes: host, port, uri (directConnection=true, so drivers never go
    looking for the other members), server (the mockupdb.MockupDB), members
    (list of dicts: name, state, health, lag_s, self), set_name,
    opcounters/connections/db_stats (dicts used to build replies).
    """

    def __init__(self, set_name: str = "rs0", version: str = MONGODB_VERSION):
        mockupdb = paths.require_module("mockupdb")
        bson = paths.require_module("bson")
        self._bson = bson
        self.set_name = set_name
        self.version = version
        self.server = mockupdb.MockupDB(port=free_port(), verbose=False)
        self.host = LOOPBACK
        self.port = self.server.run()
        self.started = time.time()
        self.election_id = bson.ObjectId("7fffffff0000000000000003")
        self.process_id = bson.ObjectId()
        me = f"{LOOPBACK}:{self.port}"
        # The other members' ports are closed loopback ports: a driver that tried
        # them would get "connection refused" at once, never a real host.
        self.members = [
            {"name": me, "state": "PRIMARY", "health": 1, "lag_s": 0, "self": True},
            {"name": f"{LOOPBACK}:{free_port()}", "state": "SECONDARY", "health": 1, "lag_s": 0},
            {"name": f"{LOOPBACK}:{free_port()}", "state": "SECONDARY", "health": 1, "lag_s": 0},
        ]
        self.opcounters = {"insert": 1520, "query": 8734, "update": 3411, "delete": 122,
                           "getmore": 9012, "command": 48211}
        self.connections = {"current": 25, "available": 838835, "totalCreated": 311,
                            "rejected": 0, "active": 6, "threaded": 25,
                            "exhaustIsMaster": 0, "exhaustHello": 2, "awaitingTopologyChanges": 2}
        self.db_stats = {"collections": 4, "views": 0, "objects": 2311,
                         "avgObjSize": 1130.5, "dataSize": 2612585.0, "storageSize": 1146880.0,
                         "indexes": 14, "indexSize": 737280.0,
                         "fsUsedSize": 17179869184.0, "fsTotalSize": 107374182400.0}
        self.databases = ["admin", "config", "local", "zone-mta"]
        self.calls: list[str] = []  # command names received, lowercase, without hello
        self._handlers = {
            "hello": self.hello, "ismaster": self.hello, "ping": lambda r: {},
            "buildinfo": self.build_info, "serverstatus": self.server_status,
            "replsetgetstatus": self.repl_set_get_status, "dbstats": self.db_stats_reply,
            "listdatabases": self.list_databases,
            "endsessions": lambda r: {},
        }
        self.server.autoresponds(mockupdb.Matcher(), self._dispatch)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def client(self, **kwargs):
        import pymongo
        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        kwargs.setdefault("socketTimeoutMS", 20000)   # a server that stops answering fails the test, not hangs it
        return pymongo.MongoClient(self.uri, **kwargs)

    def stop(self) -> None:
        self.server.stop()

    # --- dispatch --------------------------------------------------------------
    def _dispatch(self, request) -> bool:
        name = (getattr(request, "command_name", None) or "").lower()
        if name not in ("hello", "ismaster"):  # drivers' monitoring would drown the rest
            self.calls.append(name)
        handler = self._handlers.get(name)
        if handler is None:
            request.replies({"ok": 0, "errmsg": f"no such command: '{request.command_name}'",
                             "code": 59, "codeName": "CommandNotFound"})
        else:
            request.replies(handler(request))
        return True

    # --- shared pieces -----------------------------------------------------------
    def _optime(self, lag_s: float = 0):
        secs = int(time.time() - lag_s)
        return {"ts": self._bson.Timestamp(secs, 1), "t": self._bson.Int64(3)}

    def _cluster_fields(self) -> dict:
        ts = self._bson.Timestamp(int(time.time()), 1)
        return {"$clusterTime": {"clusterTime": ts, "signature": {
                    "hash": self._bson.Binary(b"\0" * 20), "keyId": self._bson.Int64(0)}},
                "operationTime": ts}

    def _me(self) -> dict:
        return next(m for m in self.members if m.get("self"))

    def _primary(self) -> dict | None:
        return next((m for m in self.members if m["state"] == "PRIMARY" and m["health"]), None)

    # --- replies -----------------------------------------------------------------
    def hello(self, request=None) -> dict:
        me, primary, now = self._me(), self._primary(), _now()
        reply = {
            "topologyVersion": {"processId": self.process_id, "counter": self._bson.Int64(6)},
            "hosts": [m["name"] for m in self.members if m["state"] != "ARBITER"],
            "setName": self.set_name, "setVersion": 1,
            "isWritablePrimary": me["state"] == "PRIMARY",
            "secondary": me["state"] == "SECONDARY",
            "me": me["name"],
            "lastWrite": {"opTime": self._optime(), "lastWriteDate": now,
                          "majorityOpTime": self._optime(), "majorityWriteDate": now},
            "maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000,
            "maxWriteBatchSize": 100000, "localTime": now,
            "logicalSessionTimeoutMinutes": 30, "connectionId": 1042,
            "minWireVersion": 0, "maxWireVersion": MAX_WIRE_VERSION, "readOnly": False,
        }
        if primary:
            reply["primary"] = primary["name"]
        if me["state"] == "PRIMARY":
            reply["electionId"] = self.election_id
        if request is not None and request.command_name == "ismaster":
            reply["ismaster"] = reply.pop("isWritablePrimary")
        return {**reply, **self._cluster_fields()}

    def build_info(self, request=None) -> dict:
        major, minor, patch = (int(x) for x in self.version.split("."))
        return {"version": self.version, "gitVersion": "0" * 40, "modules": [],
                "allocator": "tcmalloc", "javascriptEngine": "mozjs", "sysInfo": "deprecated",
                "versionArray": [major, minor, patch, 0], "bits": 64, "debug": False,
                "maxBsonObjectSize": 16777216, "storageEngines": ["devnull", "wiredTiger"]}

    def server_status(self, request=None) -> dict:
        I64 = self._bson.Int64
        uptime = time.time() - self.started
        me, now = self._me(), _now()
        ops = self.opcounters
        return {
            "host": me["name"], "version": self.version, "process": "mongod",
            "pid": I64(4242), "uptime": float(int(uptime)), "uptimeMillis": I64(int(uptime * 1000)),
            "uptimeEstimate": I64(int(uptime)), "localTime": now,
            "asserts": {"regular": 0, "warning": 0, "msg": 0, "user": 57, "tripwire": 0,
                        "rollovers": 0},
            "connections": dict(self.connections),
            "extra_info": {"note": "fields vary by platform", "user_time_us": I64(73911000),
                           "system_time_us": I64(21338000),
                           "maximum_resident_set_kb": I64(211844), "input_blocks": I64(0),
                           "output_blocks": I64(96104), "page_reclaims": I64(65243),
                           "page_faults": I64(12), "voluntary_context_switches": I64(812021),
                           "involuntary_context_switches": I64(4311)},
            "globalLock": {"totalTime": I64(int(uptime * 1e6)),
                           "currentQueue": {"total": 0, "readers": 0, "writers": 0},
                           "activeClients": {"total": 0, "readers": 0, "writers": 0}},
            "mem": {"bits": 64, "resident": 187, "virtual": 2713, "supported": True},
            "network": {"bytesIn": I64(58120343), "bytesOut": I64(313482117),
                        "physicalBytesIn": I64(52011410), "physicalBytesOut": I64(180533201),
                        "numSlowDNSOperations": I64(0), "numSlowSSLOperations": I64(0),
                        "numRequests": I64(71302)},
            "opLatencies": {"reads": {"latency": I64(2093118), "ops": I64(17746)},
                            "writes": {"latency": I64(905118), "ops": I64(5053)},
                            "commands": {"latency": I64(8843021), "ops": I64(48211)},
                            "transactions": {"latency": I64(0), "ops": I64(0)}},
            "opcounters": {k: I64(v) for k, v in ops.items()},
            "opcountersRepl": {k: I64(0) for k in ops},
            "repl": {k: v for k, v in self.hello().items()
                     if k in ("topologyVersion", "hosts", "setName", "setVersion",
                              "isWritablePrimary", "secondary", "primary", "me",
                              "electionId", "lastWrite")} | {"rbid": 1},
            "storageEngine": {"name": "wiredTiger", "supportsCommittedReads": True,
                              "oldestRequiredTimestampForCrashRecovery":
                                  self._bson.Timestamp(int(time.time()) - 60, 1),
                              "supportsPendingDrops": True, "dropPendingIdents": I64(0),
                              "supportsSnapshotReadConcern": True, "readOnly": False,
                              "persistent": True, "backupCursorOpen": False},
            "wiredTiger": {"cache": {"bytes currently in the cache": 48239402,
                                     "maximum bytes configured": 8053063680,
                                     "tracked dirty bytes in the cache": 1203,
                                     "pages read into cache": 312,
                                     "pages written from cache": 8021}},
            "metrics": {"document": {"deleted": I64(ops["delete"]), "inserted": I64(ops["insert"]),
                                     "returned": I64(41120), "updated": I64(ops["update"])},
                        "cursor": {"timedOut": I64(0), "open": {"noTimeout": I64(0),
                                                                "pinned": I64(0),
                                                                "total": I64(3)}},
                        "ttl": {"deletedDocuments": I64(0), "passes": I64(int(uptime // 60))}},
            **self._cluster_fields(),
        }

    def repl_set_get_status(self, request=None) -> dict:
        now = _now()
        primary = self._primary()
        members = []
        for i, m in enumerate(self.members):
            state = m["state"] if m["health"] else "DOWN"
            optime = self._optime(m["lag_s"])
            optime_date = dt.datetime.fromtimestamp(optime["ts"].time, dt.timezone.utc)
            doc = {"_id": i, "name": m["name"], "health": float(m["health"]),
                   "state": STATE_CODES[state],
                   "stateStr": state if m["health"] else "(not reachable/healthy)",
                   "uptime": int(time.time() - self.started) if m["health"] else 0}
            if state != "ARBITER":
                doc.update({"optime": optime, "optimeDate": optime_date,
                            "lastAppliedWallTime": optime_date,
                            "lastDurableWallTime": optime_date})
            if m.get("self"):
                doc.update({"syncSourceHost": "", "syncSourceId": -1, "infoMessage": "",
                            "configVersion": 1, "configTerm": 3, "self": True,
                            "lastHeartbeatMessage": ""})
                if state == "PRIMARY":
                    doc.update({"electionTime": self._bson.Timestamp(int(self.started), 1),
                                "electionDate": dt.datetime.fromtimestamp(
                                    int(self.started), dt.timezone.utc)})
            else:
                doc.update({"optimeDurable": optime, "optimeDurableDate": optime_date,
                            "lastHeartbeat": now, "lastHeartbeatRecv": now,
                            "pingMs": self._bson.Int64(0),
                            "lastHeartbeatMessage": "" if m["health"] else
                                "Error connecting to " + m["name"] + " :: caused by :: Connection refused",
                            "syncSourceHost": primary["name"] if primary and state == "SECONDARY" else "",
                            "syncSourceId": self.members.index(primary) if primary and state == "SECONDARY" else -1,
                            "infoMessage": "", "configVersion": 1, "configTerm": 3})
            members.append(doc)
        voting = len(self.members)
        majority = voting // 2 + 1
        committed = self._optime()
        return {
            "set": self.set_name, "date": now, "myState": STATE_CODES[self._me()["state"]],
            "term": self._bson.Int64(3), "syncSourceHost": "", "syncSourceId": -1,
            "heartbeatIntervalMillis": self._bson.Int64(2000),
            "majorityVoteCount": majority, "writeMajorityCount": majority,
            "votingMembersCount": voting, "writableVotingMembersCount": voting,
            "optimes": {"lastCommittedOpTime": committed, "lastCommittedWallTime": now,
                        "readConcernMajorityOpTime": committed,
                        "appliedOpTime": committed, "durableOpTime": committed,
                        "lastAppliedWallTime": now, "lastDurableWallTime": now},
            "lastStableRecoveryTimestamp": self._bson.Timestamp(int(time.time()) - 10, 1),
            "members": members,
            **self._cluster_fields(),
        }

    def list_databases(self, request=None) -> dict:
        """listDatabases as mongod answers it (nameOnly: names alone)."""
        if request is not None and request.doc.get("nameOnly"):
            return {"databases": [{"name": n} for n in self.databases]}
        size = float(self.db_stats["storageSize"] + self.db_stats["indexSize"])
        return {"databases": [{"name": n, "sizeOnDisk": size, "empty": False} for n in self.databases],
                "totalSize": size * len(self.databases), "totalSizeMb": self._bson.Int64(0)}

    def db_stats_reply(self, request=None) -> dict:
        db = getattr(request, "namespace", None) or "test"
        scale = 1
        if request is not None and request.doc.get("scale"):
            scale = int(request.doc["scale"])
        s = self.db_stats
        scaled = {k: s[k] / scale for k in ("dataSize", "storageSize", "indexSize")}
        return {"db": db, "collections": self._bson.Int64(s["collections"]),
                "views": self._bson.Int64(s["views"]), "objects": self._bson.Int64(s["objects"]),
                "avgObjSize": s["avgObjSize"], **scaled,
                "indexes": self._bson.Int64(s["indexes"]),
                "totalSize": scaled["storageSize"] + scaled["indexSize"],
                "scaleFactor": self._bson.Int64(scale),
                "fsUsedSize": s["fsUsedSize"] / scale, "fsTotalSize": s["fsTotalSize"] / scale}
