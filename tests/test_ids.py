"""The trace/span id derivation reproduces the shared, language-neutral vectors
(spec/trace-id-vectors.json) that the Node.js plugin must reproduce too."""
import json
from pathlib import Path

from otel_mta import ids

VECTORS = json.loads((Path(__file__).parent.parent / "spec" / "trace-id-vectors.json").read_text())


def test_trace_id_vectors():
    assert len(VECTORS["trace_ids"]) >= 10
    for v in VECTORS["trace_ids"]:
        assert ids.trace_key(v["message_id"], v["queue_id"]) == v["key"]
        got = ids.trace_id_for(v["message_id"], v["queue_id"])
        assert (got.hex() if got else None) == v["trace_id"], v


def test_span_id_vectors():
    for v in VECTORS["root_span_ids"]:
        assert ids.root_span_id(v["queue_id"]).hex() == v["span_id"]
    for v in VECTORS["attempt_span_ids"]:
        assert ids.attempt_span_id(v["queue_id"], v["seq"], v["action"], v["defcount"]).hex() == v["span_id"]
    for v in VECTORS["phase_span_ids"]:
        assert ids.phase_span_id(bytes.fromhex(v["attempt_span_id"]), v["phase"]).hex() == v["span_id"]
    assert VECTORS["inbound_span_ids"]
    for v in VECTORS["inbound_span_ids"]:
        assert ids.inbound_span_id(v["transaction_id"]).hex() == v["span_id"]


def test_message_id_normalisation_keeps_local_part_case():
    assert ids.normalize_message_id(" <AbC@Example.COM> ") == "AbC@example.com"
    assert ids.normalize_message_id("<>") is None
    assert ids.trace_id_for("<a@B.org>", "q1") == ids.trace_id_for("a@b.org", None)
    assert ids.trace_id_for("<A@b.org>", None) != ids.trace_id_for("<a@b.org>", None)


def test_ids_are_valid_otlp_ids():
    for v in VECTORS["trace_ids"]:
        if v["trace_id"]:
            assert len(bytes.fromhex(v["trace_id"])) == 16 and any(bytes.fromhex(v["trace_id"]))


def test_only_ascii_whitespace_is_trimmed():
    # the Node.js plugin trims the same six characters (zonemta-plugin/lib/trace-ids.js)
    assert ids.normalize_message_id(" \t\r\n\f\v<a@B.c>\v\f\n\r\t ") == "a@b.c"
    assert ids.normalize_message_id("\u00a0<a@B.c>") == "\u00a0<a@b.c"  # one ">" dropped, NBSP kept
    assert ids.trace_key(None, "\u3000q1") == "qid:\u3000q1"
    assert ids.root_span_id("\tq1\n") == ids.root_span_id("q1") != ids.root_span_id("\u00a0q1")


def test_the_sidecar_traces_each_message_as_the_vectors_say():
    """The correlator caches ids by normalised Message-ID; it must still hash what
    trace_id_for hashes, also for ids whose normalisation is not idempotent."""
    from otel_mta.correlate import Correlator
    from otel_mta.model import MailEvent
    corr = Correlator(100)
    raws = [v["message_id"] for v in VECTORS["trace_ids"]] + ["< <a@B.org> >", "< <> >", "<<x@y>>"]
    for n, raw in enumerate(raws):
        qid = f"18c{n:015x}"
        for action, entry in (("QUEUED", {"message-id": raw}), ("ACCEPTED", {"messageId": raw})):
            trace, _ = corr.resolve(MailEvent(action, qid, "001", entry, 1, "remote_log"))
            assert trace == ids.trace_id_for(raw, qid), (raw, action)


def test_queue_id_index_keeps_the_latest_ids_within_its_bound():
    """Entries that carry only a queue id find their Message-ID while it is
    among the latest index_size/2 queued; the index never holds more than
    index_size, and what it forgot is counted."""
    from otel_mta.correlate import Correlator
    from otel_mta.model import MailEvent
    corr = Correlator(1000)
    for n in range(5000):
        corr.learn(f"q{n}", f"<m{n}@example.org>")
        assert len(corr.index) <= 1000
    assert corr.index.evicted == 5000 - len(corr.index)
    for n in range(4500, 5000):
        event = MailEvent("DELETED", f"q{n}", "001", {}, 1, "remote_log")
        assert corr.resolve(event) == (ids.trace_id_for(f"<m{n}@example.org>", None), f"m{n}@example.org")
    assert corr.index.get("q0") is None
    # a queue id learned again (a deferred message's later attempt) joins the latest
    assert corr.index.get("q4000") == "m4000@example.org"
    corr.learn("q4000", "<m4000@example.org>")
    for n in range(5000, 5499):
        corr.learn(f"q{n}", f"<m{n}@example.org>")
    assert corr.index.get("q4000") == "m4000@example.org"
    assert corr.index.get("q4001") is None
    assert len(corr.index) == 1000


def test_resolve_agrees_with_the_message_id_rules_for_any_entry():
    """Correlator.resolve (one cached lookup) gives what message_id() and the
    derivation give, whatever the entry carries, before and after the index
    learns the queue id."""
    import random

    from otel_mta.correlate import Correlator
    from otel_mta.model import MailEvent

    rnd = random.Random(5)
    raws = [None, "", " ", "<>", "<A@B.C>", " <a@b.c> ", "q1", "q2", 7, "x@Y", "<x@y>", "no-at"]
    corr = Correlator(1000)
    for _ in range(3000):
        qid = rnd.choice(["q1", "q2", " q3 ", ""])
        action = rnd.choice(["QUEUED", "NOQUEUE", "ACCEPTED", "DEFERRED", "SPAMCHECK"])
        entry = {("message-id" if action in ("QUEUED", "NOQUEUE") else "messageId"): rnd.choice(raws)}
        event = MailEvent(action, qid, None, entry, 0, "remote_log")
        if rnd.random() < 0.1:
            corr.learn(qid, rnd.choice(raws))
        mid = corr.message_id(event)
        expected = ids.trace_id_for(mid, None) if mid else ids.trace_id_for(None, qid)
        assert corr.resolve(event) == (expected, mid), (action, qid, entry)


def test_the_c_digest_is_sha256_as_hashlib_computes_it():
    import random

    import pytest
    _ids = pytest.importorskip("otel_mta._ids")
    rnd = random.Random(3)
    alphabet = "ab<>@. :\\x00é😀\u3000"
    texts = ["", "a", "mid:x@y"] + ["".join(rnd.choice(alphabet) for _ in range(n)) for n in range(0, 200)]
    for text in texts:
        for size in (8, 16, 32):
            assert _ids.digest(text, size) == ids._digest_py(text, size), (text, size)
    with pytest.raises(UnicodeEncodeError):
        _ids.digest("\ud800", 8)
    with pytest.raises(UnicodeEncodeError):
        ids._digest_py("\ud800", 8)


def test_the_c_message_id_normalisation_is_the_python_one():
    import random

    import pytest
    _ids = pytest.importorskip("otel_mta._ids")
    rnd = random.Random(5)
    alphabet = "aZ<>@@. \t\r\n\f\v\x1cQ.é\u00a0\u3000"
    raws = [v["message_id"] for v in VECTORS["trace_ids"]] + ["", "<", ">", "<>", "< <a@B.org> >", "@", "a@",
                                                              "@B", "x@Y@Z.COM", "<AbC@Example.COM>"]
    raws += ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(12))) for _ in range(5000)]
    for raw in raws:
        assert _ids.normalize_message_id(raw) == ids.normalize_message_id_py(raw), repr(raw)
    assert sum(ids.normalize_message_id_py(r) not in (None, r) for r in raws) > 1000  # most change
    assert _ids.normalize_message_id(None) is None
    assert ids.normalize_message_id is _ids.normalize_message_id  # the pipeline uses the C twin


def test_the_c_span_ids_are_the_python_ones():
    import random

    import pytest
    _ids = pytest.importorskip("otel_mta._ids")
    rnd = random.Random(9)
    alphabet = "a1 \t\r\n\f\v\u00a0é😀:"
    qids = [v["queue_id"] for v in VECTORS["root_span_ids"]] + ["", " ", "18c5f3d2a3e0001234"]
    qids += ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(10))) for _ in range(1000)]
    for qid in qids:
        assert _ids.root_span_id(qid) == ids.root_span_id_py(qid), repr(qid)
        seq, action = rnd.choice(["001", "", "é"]), rnd.choice(["ACCEPTED", "DEFERRED", "REJECTED"])
        for defcount in (0, 3, 2.9, True):
            assert _ids.attempt_span_id(qid, seq, action, defcount) == ids.attempt_span_id_py(qid, seq, action,
                                                                                             defcount)
        assert _ids.attempt_span_id(qid, seq, action) == ids.attempt_span_id_py(qid, seq, action)
    for fn in (_ids.root_span_id, lambda q: _ids.attempt_span_id(q, "001", "ACCEPTED")):
        with pytest.raises(TypeError):
            fn(None)
    assert ids.attempt_span_id is _ids.attempt_span_id and ids.root_span_id is _ids.root_span_id
