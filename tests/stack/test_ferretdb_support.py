"""What the MongoDB stand-in (FerretDB v1, SQLite) really answers, per pymongo.

This is the record the MongoDB poller's tests rely on: where FerretDB says
CommandNotFound, use `mongo_mock` (MongoDB-shaped replies) instead. If a new
FerretDB version changes a row, this test says which.
"""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from .ferretdb import FerretDB

# command (run on admin unless a db is given) -> "ok" or the error code FerretDB returns
COMMANDS = {
    "ping": "ok", "hello": "ok", "isMaster": "ok", "buildInfo": "ok", "serverStatus": "ok",
    "hostInfo": "ok", "listDatabases": "ok", "connectionStatus": "ok", "currentOp": "ok",
    "getCmdLineOpts": "ok", "whatsmyuri": "ok",
    "replSetGetStatus": 59, "replSetGetConfig": 59, "top": 59, "connPoolStats": 59,
    "getDefaultRWConcern": 59, "lockInfo": 59, "logRotate": 59, "endSessions": 59,
    ("t", "dbStats"): "ok", ("t", "collStats", "q"): "ok", ("t", "count", "q"): "ok",
    ("t", "listIndexes", "q"): "ok", ("t", "validate", "q"): "ok", ("t", "dataSize", "t.q"): "ok",
}

# serverStatus sections a MongoDB poller reads; FerretDB has only the first group.
SERVER_STATUS_PRESENT = {"host", "version", "process", "pid", "uptime", "uptimeMillis",
                         "uptimeEstimate", "localTime", "metrics", "catalogStats"}
SERVER_STATUS_ABSENT = {"connections", "opcounters", "opcountersRepl", "mem", "network",
                        "asserts", "globalLock", "repl", "wiredTiger", "storageEngine",
                        "opLatencies", "extra_info"}

AGGREGATIONS = {
    "$collStats storageStats": ([{"$collStats": {"storageStats": {}}}], "ok"),
    "$collStats count": ([{"$collStats": {"count": {}}}], "ok"),
    "$indexStats": ([{"$indexStats": {}}], 238),   # NotImplemented
    "$count": ([{"$count": "n"}], "ok"),
}


@pytest.fixture(scope="module")
def fdb(tmp_path_factory):
    server = FerretDB(tmp_path_factory.mktemp("ferretdb-rs"), repl_set_name="rs0")
    client = server.client()
    client.t.q.insert_many([{"a": i} for i in range(3)])
    yield client
    client.close()
    server.stop()


def _outcome(call):
    try:
        call()
        return "ok"
    except OperationFailure as e:
        return e.code


@pytest.mark.parametrize("spec", COMMANDS, ids=str)
def test_command_support(fdb, spec):
    db, *cmd = spec if isinstance(spec, tuple) else ("admin", spec)
    assert _outcome(lambda: fdb[db].command(*cmd)) == COMMANDS[spec]


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_aggregation_support(fdb, name):
    pipeline, expected = AGGREGATIONS[name]
    assert _outcome(lambda: list(fdb.t.q.aggregate(pipeline))) == expected


def test_server_status_sections(fdb):
    status = fdb.admin.command("serverStatus")
    assert SERVER_STATUS_PRESENT <= status.keys()
    assert not SERVER_STATUS_ABSENT & status.keys()
    assert status["process"] == "ferretdb"  # mongod says "mongod"
    # Per-command counters exist and are MongoDB-shaped ({total, failed}).
    assert status["metrics"]["commands"]["insert"] == {"total": 1, "failed": 0}


def test_repl_set_name_shows_in_hello_only(fdb):
    hello = fdb.admin.command("hello")
    assert hello["setName"] == "rs0" and hello["isWritablePrimary"] is True
    # A real member also reports these; FerretDB does not.
    assert not {"primary", "me", "secondary", "electionId", "lastWrite"} & hello.keys()


def test_db_stats_fields(fdb):
    stats = fdb.t.command("dbStats")
    assert stats["objects"] == 3 and stats["collections"] == 1
    assert {"dataSize", "storageSize", "indexes", "indexSize", "totalSize"} <= stats.keys()
    assert not {"fsUsedSize", "fsTotalSize"} & stats.keys()
