"""The C twins of a delivery entry's and a queue entry's mapping
(signals/_fields.c) do exactly what the Python references (signals/fields.py)
do: same attributes in the same order, same types, same log line, same errors —
for ZoneMTA-shaped entries and for hostile ones, under every privacy mode."""
from __future__ import annotations

import itertools
import random

import pytest

from otel_mta.privacy import Redactor
from otel_mta.signals import fields

_fields = pytest.importorskip("otel_mta.signals._fields")

ADDRESSES = ["user@Example.COM", " Bob <bob@Mail.Example.org> ", "x@", "@", "noat", "a@b@C.d", "", "u@ ex.com >> ",
             "u@\x1cEX.com\x1f", "u@bücher.DE", "ü@example.com", "u@EXAMPLE.COM\u00a0", "u@İstanbul.TR", "u@>",
             "u@example.com\u3000>", "<>"]
RESPONSES = ["250 2.0.0 OK 1234 - gsmtp", "550 5.1.1 <Some.One@Example.COM>: Recipient address rejected",
             "451-4.7.1 Greylisted", "  421 4.7.0 try later", "5501 x", "550 5.1.1234 x", "550 5.12.1_", "550-- 5.1.1",
             "550 5.1.1a", "550 5.1.1.", "550 5.1.1", "550 5.1234.1", "550 5.123.123", "550", "55", "", "abc",
             "٥٥٠ ٥.١.١ arabic digits", "550 ٥.١.١ x", "550\u00a05.1.1 nbsp", "\u2003550 5.1.1 em space",
             "550 5.1.1 é@exämple.com", "250 ok <a@b.cd> and c@d.ef", "550 5.1.1\x1c", "550 -5.1.1", "550 - 5.1.1"]
NUMBERS = [0, 1, 250, 1234, -5, 2**70, 1.5, -0.0, 123.999, True, False, float("inf"), float("nan"), "12"]
OTHER = [None, [], [1, "a"], {}, {"a": 1}, b"bytes", "", "x", "ZONE", "é", 0, 7, 1.25, True]


def random_entry(rnd: random.Random) -> dict:
    def pick(pool):
        return rnd.choice(pool + OTHER)

    entry = {}
    for key, pool in (("zone", ["default", "bulk"]), ("mx", ["mx1.example.com", "MX.é.de"]),
                      ("ip", ["10.0.0.5", "::1"]), ("host", ["192.0.2.10"]),
                      ("category", ["greylist", "recipient", "dns"]), ("response", RESPONSES),
                      ("protocol", ["smtp", "lmtp"]), ("to", ADDRESSES), ("from", ADDRESSES),
                      ("returnPath", ADDRESSES), ("size", NUMBERS), ("tlsVersion", ["TLSv1.3", ""]),
                      ("tlsCipher", ["TLS_AES_256_GCM_SHA384"]), ("tlsAuthorized", [True, False, 1, "yes"]),
                      ("tlsAuthorizationError", ["CERT_HAS_EXPIRED"]), ("defcount", NUMBERS),
                      ("timer", NUMBERS), ("start", NUMBERS)):
        if rnd.random() < 0.85:
            entry[key] = pick(pool)
    return entry


def outcome(fn, entry, action, red):
    attrs = {"mta.queue_id": "q1", "mta.delivery.seq": "001", "mta.message_id": None}
    try:
        result = fn(dict(entry), attrs, action, {"ACCEPTED": "delivered", "DEFERRED": "deferred",
                                                  "REJECTED": "rejected"}[action], "q1.001", red)
    except Exception as err:  # both twins must fail the same way
        return ("error", type(err)), None
    return (repr(list(attrs.items())), repr(result)), (attrs, result)


MODES = ["domain", "hmac", "full", "drop"]


@pytest.mark.parametrize("recipient,sender", list(itertools.product(MODES, MODES)))
def test_c_and_python_map_random_entries_alike(recipient, sender):
    red = Redactor(recipient=recipient, sender=sender, hmac_key=b"k")
    rnd = random.Random(f"{recipient}/{sender}")
    errors = 0
    for _ in range(1500):
        entry = random_entry(rnd)
        for action in ("ACCEPTED", "DEFERRED", "REJECTED"):
            c, _ = outcome(_fields.delivery_fields, entry, action, red)
            py, _ = outcome(fields.delivery_fields_py, entry, action, red)
            assert c == py, (entry, action)
            errors += c[0] == "error"
    assert errors < 1500  # most entries map; some (inf, nan) fail alike in both


def test_a_zonemta_delivery_reads_the_same_in_both():
    red = Redactor()
    entry = {"id": "18c", "seq": "001", "zone": "default", "mx": "mx1.example.com", "host": "192.0.2.10",
             "ip": "10.0.0.5", "to": "Someone@Example.COM", "from": "news@example.org",
             "returnPath": "news@example.org", "size": 3000, "timer": 812, "start": 40, "protocol": "smtp",
             "tlsVersion": "TLSv1.3", "tlsCipher": "TLS_AES_256_GCM_SHA384", "tlsAuthorized": True,
             "category": "recipient", "response": "550 5.1.1 <Someone@Example.COM>: Recipient address rejected"}
    _, (attrs, result) = outcome(_fields.delivery_fields, entry, "REJECTED", red)
    assert outcome(fields.delivery_fields_py, entry, "REJECTED", red)[1] == (attrs, result)
    assert result[0] == ("REJECTED[recipient] q1.001 to example.com via mx1.example.com[192.0.2.10] from 10.0.0.5 "
                         "in 812 ms: 550 5.1.1 <***@Example.COM>: Recipient address rejected")
    assert attrs["mta.smtp.code"] == 550 and attrs["mta.smtp.enhanced_status"] == "5.1.1"
    assert attrs["mta.recipient.domain"] == "example.com" and "mta.recipient.address" not in attrs
    assert result[1]["error.type"] == "recipient"


def test_non_ascii_text_follows_python_rules_in_both():
    """Unicode whitespace and digits: the C twin hands non-ASCII text to Python."""
    red = Redactor(recipient="full")
    entry = {"to": "u@EXAMPLE.COM\u00a0", "response": "٥٥٠ ٥.١.١ arabic digits"}
    _, (attrs, _) = outcome(_fields.delivery_fields, entry, "ACCEPTED", red)
    assert attrs["mta.recipient.domain"] == "example.com"
    assert attrs["mta.smtp.code"] == 550 and attrs["mta.smtp.enhanced_status"] == "٥.١.١"


RECIPIENT_LISTS = ADDRESSES + ["a@x.com,b@Y.com", "a@x.com, b@x.com ,c@z.org", " , ,", ",", "a@x.com,,b@y.com",
                               "a@b.c,\u00a0d@E.F\u00a0,g@h.i", "\u2003,a@b.c", "one, two@x", "a@x.com" * 3]
TEXTS = ["Hello", "", "subject with é", "client 192.0.2.1", "user@example.com"]
ERRORS = ["550 5.7.1 rejected for <a@b.cd>", "Message too large", "", "é@exämple.com refused"]


def random_queue_entry(rnd: random.Random) -> dict:
    def pick(pool):
        return rnd.choice(pool + OTHER)

    entry = {}
    for key, pool in (("interface", ["feeder", "bounce", ""]), ("from", ADDRESSES), ("headerFrom", ADDRESSES),
                      ("to", RECIPIENT_LISTS), ("subject", TEXTS), ("user", TEXTS + [""] * 3),
                      ("auth", TEXTS), ("src", ["192.0.2.1", "::1"]), ("originhost", ["[192.0.2.1]"]),
                      ("transhost", ["client.example"]), ("transtype", ["ESMTPSA", "ESMTP"]), ("body", NUMBERS),
                      ("md5", ["d41d8cd98f00b204e9800998ecf8427e"]), ("error", ERRORS)):
        if rnd.random() < 0.85:
            entry[key] = pick(pool)
    return entry


def queued_outcome(fn, entry, action, red):
    attrs = {"mta.queue_id": "q1", "mta.delivery.seq": None, "mta.message_id": "m@x"}
    try:
        result = fn(dict(entry), attrs, action, "q1", red)
    except Exception as err:  # both twins must fail the same way
        return ("error", type(err)), None
    return (repr(list(attrs.items())), repr(result)), (attrs, result)


VALUE_MODES = ["drop", "hmac", "full"]


@pytest.mark.parametrize("recipient,sender", list(itertools.product(MODES, MODES)))
def test_c_and_python_map_random_queue_entries_alike(recipient, sender):
    rnd = random.Random(f"queued {recipient}/{sender}")
    errors = 0
    for i in range(1200):
        subject, user, client = (VALUE_MODES[(i + k) % 3] for k in range(3))
        red = Redactor(recipient=recipient, sender=sender, subject=subject, user=user, client=client,
                       hmac_key=b"k")
        entry = random_queue_entry(rnd)
        for action in ("QUEUED", "NOQUEUE"):
            c, _ = queued_outcome(_fields.queued_fields, entry, action, red)
            py, _ = queued_outcome(fields.queued_fields_py, entry, action, red)
            assert c == py, (entry, action, subject, user, client)
            errors += c[0] == "error"
    assert errors < 1200


def test_the_queue_twins_can_tell_privacy_modes_apart():
    """The differential test can fail: different modes give different output."""
    rnd = random.Random(7)
    entries = [random_queue_entry(rnd) for _ in range(200)]
    a = Redactor(recipient="full", sender="domain", subject="full", hmac_key=b"k")
    b = Redactor(recipient="hmac", sender="drop", subject="hmac", hmac_key=b"k")
    differ = sum(queued_outcome(_fields.queued_fields, e, "QUEUED", a)[0] !=
                 queued_outcome(fields.queued_fields_py, e, "QUEUED", b)[0] for e in entries)
    assert differ > 100


def test_a_zonemta_queued_entry_reads_the_same_in_both():
    red = Redactor(recipient="hmac", client="full", hmac_key=b"k")
    entry = {"id": "18c", "action": "QUEUED", "interface": "feeder", "from": "Alice@Example.ORG",
             "to": "bob@example.net, Carol@Example.NET,dave@example.com", "src": "192.0.2.1",
             "transtype": "ESMTPSA", "body": 21312, "subject": "Hello", "md5": "abc"}
    _, (attrs, result) = queued_outcome(_fields.queued_fields, entry, "QUEUED", red)
    assert queued_outcome(fields.queued_fields_py, entry, "QUEUED", red)[1] == (attrs, result)
    assert result == ("QUEUED q1 from example.org for 3 recipients (example.com, example.net), 21312 bytes "
                      "via feeder", "feeder", 21312, 3)
    assert attrs["mta.recipient.domain"] == ["example.com", "example.net"]
    assert attrs["mta.recipient.hash"] == [red.hash(a) for a in ("bob@example.net", "Carol@Example.NET",
                                                                 "dave@example.com")]
    assert attrs["mta.client.address"] == "192.0.2.1" and "mta.subject" not in attrs
    _, (attrs, result) = queued_outcome(_fields.queued_fields, {"error": "550 <x@y.zz> no"}, "NOQUEUE", red)
    assert result == ("NOQUEUE q1: 550 <***@y.zz> no", None, None, 0)


def test_pick_takes_the_named_keys_in_their_order_in_both():
    d = {"b": 2, "a": 1, "c": None, "x": [1]}
    for fn in (_fields.pick, fields.pick_py):
        out = fn(d, ("a", "missing", "b", "x"))
        assert list(out.items()) == [("a", 1), ("missing", None), ("b", 2), ("x", [1])]
        assert out["x"] is d["x"] and fn({}, ()) == {}


def test_addresses_in_ascii_text_are_masked_as_the_regex_masks_them():
    """The C twin of Redactor.text's regex (privacy.ADDRESS_IN_TEXT): ZoneMTA's
    replies and errors, and random text built from address-like pieces."""
    from otel_mta.privacy import ADDRESS_IN_TEXT
    rnd = random.Random(3)
    local = ["a", "Bob.Smith", "x+y", "a@b", "<a", '"q"', "", "-", "1", "a.b-c"]
    domain = ["example.com", "b.c", "b.cd", "b.cd.e", "x-y.ORG", "b." + "c" * 63, "b." + "c" * 64, "1.23", "a..bc",
              "-.de", ".de", "b.c1d", "b.cd-", ""]
    sep = [" ", ", ", "<", ">", ": ", "(", ")", "[", "]", ";", "\t", "'", '"', "", ".", "@", "\x1c", "x"]
    texts = [r for r in RESPONSES if r.isascii()]
    texts += ["".join(rnd.choice(sep) + rnd.choice(local) + rnd.choice(["@", "@", "@@", ""]) + rnd.choice(domain)
                      for _ in range(rnd.randrange(4))) for _ in range(20000)]
    changed = 0
    for text in texts:
        want = ADDRESS_IN_TEXT.sub(r"***@\1", text)
        assert _fields.mask_addresses(text) == want, repr(text)
        changed += want != text
    assert changed > 5000  # most of them hold an address
    with pytest.raises(ValueError):
        _fields.mask_addresses("é@exämple.com")  # other text is the regex's (Redactor.text)
