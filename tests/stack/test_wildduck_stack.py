"""The real WildDuck of the stack: what runs on FerretDB v1 and what does not,
as the WildDuck tests rely on it. If a FerretDB or WildDuck upgrade lets
WildDuck store a message, the last assertions fail: then test storage too
(`[QUOTA]` GELF lines, wildduck.lmtp.message.size{success}) and update
tests/stack/README.md and docs/wildduck.md."""

from __future__ import annotations

import json
import zlib


def test_wildduck_serves_users_logins_lmtp_and_metrics_but_cannot_store(wildduck_factory, gelf_listener):
    wd = wildduck_factory(gelf_port=gelf_listener.port)
    assert wd.version == "1.51.1"
    user = wd.create_user("alice", "secret-pass-1", "alice@example.com")
    status, doc = wd.api("GET", f"/users/{user}")
    assert status == 200 and doc["username"] == "alice"
    assert wd.imap_login("alice", "secret-pass-1") == (True, "alice authenticated")
    assert wd.pop3_login("alice", "secret-pass-1") == (0, 0)
    assert wd.metric("wildduck_info", version="1.51.1") == 1
    assert wd.metric("wildduck_auth_attempts_total", service="imap", scope="imap", result="success") == 1
    # GELF: zlib-compressed JSON, as the npm gelf client sends it
    gelf_listener.wait_for(lambda ds: any(b"AUTHOK" in zlib.decompress(d) for d in ds), timeout=10)
    first = json.loads(zlib.decompress(gelf_listener.datagrams[0]))
    assert first["version"] == "1.0" and first["_component"] == "wildduck" and first["host"] == wd.gelf_host
    # LMTP: recipients are checked; storing the message is refused by FerretDB
    result = wd.lmtp_send("sender@remote.example", ["alice@example.com", "nobody@example.com"],
                          "From: sender@remote.example\nSubject: x\n\nhello\n")
    assert result["alice@example.com"][0] == 250 and result["nobody@example.com"][0] == 550
    code, reply = result["DATA"]
    assert code == 450 and "findAndModify" in reply and "not implemented" in reply
    # a wrong password meets the same limit: a database error, not a failed login
    assert wd.imap_login("alice", "wrong-password")[0] is False
    assert wd.metric("wildduck_auth_attempts_total", service="imap", scope="imap", result="error") == 1
