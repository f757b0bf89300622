"""The WildDuck users poller, against accounts the real WildDuck created in
FerretDB through its API.

FerretDB v1 cannot store a message (tests/stack/wildduck.py), so WildDuck
never raises an account's storageUsed here; the tests raise it the way
WildDuck's message handler does (`$inc` on users.storageUsed) to have
something to add up.
"""
from __future__ import annotations

from bson import ObjectId

from otel_mta import config
from otel_mta.sources.wildduck_users import WildDuckUsersPoller
from tests.pollers.conftest import assert_matches_catalog, closed_port, one


def make(closing, pipeline, url: str, **settings) -> WildDuckUsersPoller:
    return closing(WildDuckUsersPoller(pipeline, config.WildDuckUsersSettings(url=url, **settings)))


def accounts(wd, n: int) -> list[str]:
    return [wd.create_user(f"user{i}", f"secret-pass-{i}", f"user{i}@example.com") for i in range(n)]


def store(wd, user_id: str, size: int) -> None:
    """What WildDuck's message handler does to an account when it stores a message."""
    with wd_client(wd) as client:
        client[wd.mongo_db].users.update_one({"_id": ObjectId(user_id)}, {"$inc": {"storageUsed": size}})


def wd_client(wd):
    import pymongo
    return pymongo.MongoClient(wd.mongo_uri, directConnection=True, serverSelectionTimeoutMS=5000)


async def test_user_count_and_storage_of_the_real_wildduck(rig, closing, wildduck_factory):
    build, export = rig
    wd = wildduck_factory(metrics=False)
    ids = accounts(wd, 3)
    store(wd, ids[0], 1500)
    store(wd, ids[2], 250_000)
    pipeline = build()
    poller = make(closing, pipeline, wd.mongo_uri)     # the database named in the URI
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert_matches_catalog(points)
    count, usage = one(points, "wildduck.user.count"), one(points, "wildduck.storage.usage")
    assert (count.value, usage.value) == (3, 251_500)
    assert count.resource["service.name"] == usage.resource["service.name"] == "wildduck"
    assert usage.unit == "By" and usage.kind == "gauge"
    assert poller.summary() == f"{wd.mongo_db}.users: 3 users, 251500 bytes in use"
    # an account WildDuck deletes leaves both
    status, doc = wd.api("DELETE", f"/users/{ids[2]}")
    assert status == 200 and doc["success"], doc
    assert await poller.poll_once(), poller.last_error
    points = export()
    assert (one(points, "wildduck.user.count").value, one(points, "wildduck.storage.usage").value) == (2, 1500)


async def test_above_max_users_the_storage_sum_is_left_out_and_check_says_why(rig, closing, wildduck_factory,
                                                                              ferretdb):
    build, export = rig
    wd = wildduck_factory(metrics=False)
    accounts(wd, 3)
    # the database from the setting (WildDuck's dbs.users), not from the URI
    poller = make(closing, build(), ferretdb.uri, database=wd.mongo_db, max_users=2)
    result = await poller.check()
    assert result.ok, result.detail
    assert result.detail == f"{wd.mongo_db}.users: 3 users; storage sum left out (more than max_users 2)"
    points = export()
    assert one(points, "wildduck.user.count").value == 3
    assert "wildduck.storage.usage" not in points


async def test_an_unreachable_server_is_a_clean_check_failure(rig, closing):
    build, export = rig
    poller = make(closing, build(), f"mongodb://127.0.0.1:{closed_port()}/wildduck", timeout="2s")
    result = await poller.check()
    assert not result.ok and "connection refused" in result.detail
    points = export()
    assert not {"wildduck.user.count", "wildduck.storage.usage"} & set(points)
    assert one(points, "otelmta_poller_failures", poller="wildduck_users").attrs["reason"] == "refused"
