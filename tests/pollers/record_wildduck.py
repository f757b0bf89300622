"""Records the real WildDuck's /metrics into testdata/wildduck/ for the fast
replay tests (test_wildduck_metrics.py). Run after `make setup-stack`:

    .venv/bin/python -m tests.pollers.record_wildduck

It starts the real WildDuck of tests/stack (FerretDB, Redis), then drives what
runs on FerretDB (tests/stack/wildduck.py): two users through the API, an
unknown one asked for (404), IMAP logins (one good, one with an empty
password, one of an unknown user), a POP3 login, and an LMTP transaction
with one local and one unknown recipient (WildDuck cannot store the message
on FerretDB: 450). It saves /metrics as WildDuck served it; `VERSION` says
which WildDuck. test_wildduck_metrics.py checks that the live answer still
has the recorded families.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.stack.ferretdb import FerretDB
from tests.stack.redis_server import RedisServer
from tests.stack.wildduck import WildDuck

OUT = Path(__file__).resolve().parent / "testdata" / "wildduck"
MESSAGE = ("From: sender@remote.example\nTo: alice@example.com\nSubject: recorded\n"
           "Message-ID: <recorded@remote.example>\n\nhello\n")


def exercise(wd: WildDuck) -> None:
    """The traffic behind the recording (also used by the live tests)."""
    wd.create_user("alice", "secret-pass-1", "alice@example.com")
    wd.create_user("bob", "secret-pass-2", "bob@example.com")
    assert wd.api("GET", "/users/0123456789abcdef01234567")[0] == 404
    assert wd.imap_login("alice", "secret-pass-1")[0]
    assert not wd.imap_login("alice", "")[0]
    assert not wd.imap_login("nobody", "whatever")[0]
    assert wd.pop3_login("bob", "secret-pass-2") == (0, 0)
    result = wd.lmtp_send("sender@remote.example", ["alice@example.com", "nobody@example.com"], MESSAGE)
    assert result["alice@example.com"][0] == 250 and result["nobody@example.com"][0] == 550, result


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="record-wildduck-"))
    fdb = FerretDB(tmp / "ferretdb")
    redis = RedisServer(tmp / "redis")
    wd = WildDuck(tmp / "wildduck", mongo_uri=fdb.uri, redis_host=redis.host, redis_port=redis.port)
    try:
        exercise(wd)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "metrics.txt").write_text(wd.metrics_text())
        (OUT / "VERSION").write_text(f"@zone-eu/wildduck {wd.version} on FerretDB {fdb.version}\n")
    finally:
        wd.stop()
        redis.stop()
        fdb.stop()
    print(f"recorded WildDuck {wd.version} into {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
