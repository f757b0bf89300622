"""The mockupdb replica-set member answers pymongo like a MongoDB 7.0 primary."""

from __future__ import annotations

import datetime as dt

import pytest
from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure


@pytest.fixture
def client(mongo_mock):
    c = mongo_mock.client(tz_aware=True)
    yield c
    c.close()


def test_repl_set_get_status_shape_and_lag(mongo_mock, client):
    mongo_mock.members[2]["lag_s"] = 40
    status = client.admin.command("replSetGetStatus")
    assert status["set"] == "rs0" and status["myState"] == 1 and status["ok"] == 1
    assert isinstance(status["term"], Int64)
    assert [m["stateStr"] for m in status["members"]] == ["PRIMARY", "SECONDARY", "SECONDARY"]
    primary, _, lagging = status["members"]
    assert primary["self"] is True and primary["name"] == f"127.0.0.1:{mongo_mock.port}"
    assert isinstance(lagging["optime"]["ts"], Timestamp)
    lag = (primary["optimeDate"] - lagging["optimeDate"]).total_seconds()
    assert 39 <= lag <= 41
    assert lagging["syncSourceHost"] == primary["name"]


def test_unhealthy_member(mongo_mock, client):
    mongo_mock.members[1]["health"] = 0
    member = client.admin.command("replSetGetStatus")["members"][1]
    assert member["health"] == 0.0 and member["state"] == 8
    assert member["stateStr"] == "(not reachable/healthy)"


def test_server_status_has_the_sections_ferretdb_lacks(mongo_mock, client):
    mongo_mock.opcounters["insert"] = 99
    status = client.admin.command("serverStatus")
    assert status["process"] == "mongod" and status["version"] == "7.0.14"
    assert status["opcounters"]["insert"] == 99
    assert isinstance(status["opcounters"]["insert"], Int64)
    assert status["connections"]["current"] == 25
    assert status["repl"]["setName"] == "rs0" and status["repl"]["isWritablePrimary"] is True
    assert status["wiredTiger"]["cache"]["maximum bytes configured"] > 0
    assert isinstance(status["localTime"], dt.datetime)


def test_db_stats_scale(mongo_mock, client):
    stats = client["zone-mta"].command("dbStats", scale=1024)
    assert stats["db"] == "zone-mta" and stats["scaleFactor"] == 1024
    assert stats["dataSize"] == mongo_mock.db_stats["dataSize"] / 1024


def test_unknown_command_fails_like_mongod(mongo_mock, client):
    with pytest.raises(OperationFailure) as err:
        client.admin.command("top")
    assert err.value.code == 59
    assert mongo_mock.calls[-1] == "top"


def test_list_databases_like_mongod(mongo_mock, client):
    names = [d["name"] for d in client.admin.command("listDatabases", nameOnly=True)["databases"]]
    assert names == mongo_mock.databases
    full = client.admin.command("listDatabases")
    assert all(d["sizeOnDisk"] > 0 for d in full["databases"]) and full["totalSize"] > 0
