"""The real WildDuck (tests/stack: 1.51.1 on Node 22, FerretDB, Redis) logging
to the GELF receiver with its own client (npm gelf 2.0.1, zlib over UDP):
API calls, IMAP logins, and mail for an account that forwards it, once
queued for ZoneMTA and once refused by WildDuck's forwarding limit. What runs
on FerretDB and what cannot (storing a message) is in tests/stack/wildduck.py.
"""
from __future__ import annotations

import asyncio
import json

from otel_mta import ids

MESSAGE_ID = "<Forward-1@Remote.Example>"


def message(message_id: str) -> str:
    return (f"From: sender@remote.example\nTo: fwd@example.com\nSubject: for the forward test\n"
            f"Message-ID: {message_id}\n\nhello\n")


def by_tag(records: list) -> dict:
    """{'[TAG] ...' prefix of the body: [(resource, attributes, record)]}."""
    out: dict = {}
    for res, a, rec in records:
        out.setdefault(rec.body.string_value.split("]")[0] + "]", []).append((res, a, rec))
    return out


async def drive(wd) -> None:
    """What the tests send WildDuck, in a thread: its client calls block."""
    def work():
        wd.create_user("alice", "secret-pass-1", "alice@example.com", name="Alice Example")
        wd.create_user("fwd", "secret-pass-2", "fwd@example.com", targets=["outside@elsewhere.example"],
                       forwards=1)
        assert wd.api("GET", "/users/0123456789abcdef01234567")[0] == 404
        assert wd.imap_login("alice", "secret-pass-1")[0]
        assert not wd.imap_login("alice", "")[0]
        assert not wd.imap_login("nobody", "whatever")[0]
        for n, mid in enumerate((MESSAGE_ID, "<forward-2@remote.example>")):
            result = wd.lmtp_send("sender@remote.example", ["fwd@example.com"], message(mid))
            assert result["fwd@example.com"][0] == 250, (n, result)
    await asyncio.to_thread(work)


async def test_real_wildduck_gelf_maps_to_log_records_and_metrics(gelf, wildduck_factory):
    g = await gelf()
    wd = wildduck_factory(gelf_port=g.port, metrics=False)
    await drive(wd)
    # 2 users + 1 not found, AUTHOK + CONNSTART + CONNRELEASE, 2 AUTHFAIL, FRWRDOK, FRWRDFAIL
    records = await g.records(10, timeout=30)
    tags = by_tag(records)
    assert all(res["service.name"] == "wildduck" and res["host.name"] == wd.gelf_host for res, _, _ in records)

    # API calls: the route and method by their semantic-convention names; the
    # request's echoed parameters (user name, real name, address, account id)
    # and the caller's address stay in WildDuck
    created = [x for x in tags["WILDDUCK HTTP [POST /users]"]]
    assert len(created) == 2
    for _, a, rec in created:
        assert a["http.route"] == "/users" and a["http.request.method"] == "POST"
        assert a["gelf.api_response"] == "success" and rec.severity_number == 9
        assert not [k for k in a if k.startswith(("gelf.req_", "gelf.res_", "client.", "user."))], a
    text = str([(a, rec.body.string_value) for _, a, rec in records])
    for personal in ("Alice Example", "alice@example.com", "outside@", "127.0.0.1"):
        assert personal not in text, personal
    (_, a, rec), = tags["WILDDUCK HTTP [GET /users/:user]"]
    assert rec.body.string_value.endswith("FAILED") and a["gelf.api_response"] == "fail"
    assert a["error.message"] == "This user does not exist"
    assert rec.severity_number == 13    # a failed call is a warning, not information

    # IMAP logins: WildDuck tags a good one with _mail_action=auth, the failed
    # ones only with _auth_result; all are auth actions here
    (_, ok, rec), = tags["WILDDUCK [AUTHOK]"]
    assert ok["wildduck.action"] == "auth" and ok["wildduck.result"] == "success" and rec.severity_number == 9
    assert "session.id" in ok and not [k for k in ok if k.startswith("user.")]
    failed = {a["error.message"]: (a, rec) for _, a, rec in tags["WILDDUCK [AUTHFAIL]"]}
    assert set(failed) == {"Empty password", "Unknown user"}
    for a, rec in failed.values():
        assert a["wildduck.action"] == "auth" and a["wildduck.result"] == "failure"
        assert rec.severity_number == 13
        assert rec.body.string_value == "WILDDUCK [AUTHFAIL] ***"    # the login name WildDuck echoes
    assert {a["gelf.auth_result"] for a, _ in failed.values()} == {"fail", "unknown"}
    assert {a["gelf.connection"] for _, a, _ in tags["WILDDUCK [CONNSTART]"] + tags["WILDDUCK [CONNRELEASE]"]} \
        == {"establish", "release"}

    # forwarding: queued for ZoneMTA, in the message's trace, and the
    # forwarded copy's queue id noted for other GELF records (never for
    # ZoneMTA's own entries: GELF is unauthenticated, docs/trace-ids.md)
    (_, fwd, rec), = tags["WILDDUCK [FRWRDOK]"]
    assert rec.trace_id == ids.trace_id_for(MESSAGE_ID, None)
    assert fwd["mta.message_id"] == "Forward-1@remote.example"
    qid = fwd["wildduck.forward.queue_id"]
    assert g.pipeline.mail.corr.untrusted_message_id(qid) == "Forward-1@remote.example"
    assert g.pipeline.mail.corr.index.get(qid) is None
    assert fwd["wildduck.forward.target.domain"] == "elsewhere.example"
    assert fwd["mta.sender.domain"] == "remote.example" and fwd["wildduck.result"] == "success"
    # the second message is over the account's forwarding limit (forwards=1)
    (_, refused, rec), = tags["WILDDUCK [FRWRDFAIL]"]
    assert refused["wildduck.result"] == "failure" and refused["gelf.forwarded"] == "no"
    assert refused["error.message"] == "Skipped forwarding due to rate limiting"
    assert rec.severity_number == 13
    assert rec.trace_id == ids.trace_id_for("<forward-2@remote.example>", None)

    g.export_metrics()
    assert g.counter("wildduck.mail.actions") == {("auth", "success"): 1, ("auth", "failure"): 2,
                                                  ("forward", "success"): 1, ("forward", "failure"): 1}
    assert not g.refused() and not g.dropped()


async def test_only_wildducks_request_echo_is_held_back(gelf):
    """`_req_*`/`_res_*` are WildDuck's echo of API parameters; another
    producer's fields of those names pass through as gelf.* as any other."""
    g = await gelf()
    for msg in ({"short_message": "WILDDUCK HTTP [PUT /users/:user] OK", "_component": "wildduck",
                 "_http_route": "/users/:user", "_req_user": "65a0c0ffee", "_req_name": "Bob",
                 "_res_id": "65a0c0ffee", "_req_remoteAddress": "198.51.100.7"},
                {"short_message": "an app's line", "_component": "shop", "_req_user": "42"}):
        g.source.handle_datagram(json.dumps(msg).encode())
    got = {rec.body.string_value: a for _, a, rec in await g.records(2)}
    assert got["WILDDUCK HTTP [PUT /users/:user] OK"] == {
        "http.route": "/users/:user", "gelf.component": "wildduck"}
    assert got["an app's line"]["gelf.req_user"] == "42"
