"""The hand-written OTLP wire encoding parses, field for field, with the official
opentelemetry-proto classes."""
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_mta.signals import logs as L, traces as T, wire
from tests.otlp_receiver import attrs

VALUES = {"s": "x" * 20000 + "é", "empty": "", "t": True, "f": False, "i": 2**62, "neg": -42, "d": 0.25,
          "arr": ["a", 1, 2.5, False], "kv": {"k": "v", "n": 3}, "b": b"\x00\x01"}


def test_log_record_fields():
    rec = L.encode_log(123, 456, L.WARN, "body ü", wire.encode_attrs(wire.LOG_ATTRS, VALUES),
                       b"\x01" * 16, b"\x02" * 8, "zonemta.deferred")
    req = ExportLogsServiceRequest.FromString(wire.request([(wire.resource({"service.name": "z", "n": 1}),
                                                             wire.scope("otel-mta", "9"), [rec, rec])]))
    rl = req.resource_logs[0]
    assert attrs(rl.resource.attributes) == {"service.name": "z", "n": 1}
    assert rl.scope_logs[0].scope.name == "otel-mta" and rl.scope_logs[0].scope.version == "9"
    r = rl.scope_logs[0].log_records[1]
    assert (r.time_unix_nano, r.observed_time_unix_nano, r.severity_number, r.severity_text) == (123, 456, 13, "WARN")
    assert r.body.string_value == "body ü" and r.event_name == "zonemta.deferred"
    assert r.trace_id == b"\x01" * 16 and r.span_id == b"\x02" * 8
    assert attrs(r.attributes) == {**VALUES}


def test_c_and_python_attribute_encoders_agree():
    assert wire.HAVE_C  # CI builds it
    values = {**VALUES, "none": None, "big": 2**70, "lone_surrogate": "a\ud800b", "nested": [[1, {"a": [2.5]}]],
              "other": object.__name__}
    for cached in (frozenset(), frozenset(values)):
        assert wire.encode_attrs(wire.SPAN_ATTRS, values) == wire.encode_attrs_py(wire.SPAN_ATTRS, values, cached)
    assert wire.encode_attrs(wire.LOG_ATTRS, {}) == b""


def test_severity_numbers_between_ranges_get_their_range_name():
    rec = L.encode_log(1, 1, 11, "x", b"")
    req = ExportLogsServiceRequest.FromString(wire.request([(b"", wire.scope("s", "1"), [rec])]))
    r = req.resource_logs[0].scope_logs[0].log_records[0]
    assert (r.severity_number, r.severity_text) == (11, "INFO")


def test_span_fields():
    span = T.encode_span(b"\x0a" * 16, b"\x0b" * 8, b"\x0c" * 8, "delivery", T.SPAN_KIND_CLIENT, 10, 5,
                         wire.encode_attrs(wire.SPAN_ATTRS, {"server.address": "mx"}), T.STATUS_ERROR, "550 no",
                         events=[(7, "tls", {"v": "1.3"})])
    req = ExportTraceServiceRequest.FromString(wire.request([(b"", wire.scope("s", "1"), [span])]))
    s = req.resource_spans[0].scope_spans[0].spans[0]
    assert (s.trace_id, s.span_id, s.parent_span_id, s.name) == (b"\x0a" * 16, b"\x0b" * 8, b"\x0c" * 8, "delivery")
    assert s.kind == s.SPAN_KIND_CLIENT
    assert (s.start_time_unix_nano, s.end_time_unix_nano) == (10, 10)  # never ends before it starts
    assert s.status.code == s.status.STATUS_CODE_ERROR and s.status.message == "550 no"
    assert s.events[0].name == "tls" and attrs(s.events[0].attributes) == {"v": "1.3"}
    assert s.flags & 0xFF == 1


def test_c_and_python_record_encoders_agree():
    """encode_log / encode_span / request have C twins (signals/_wire.c): same bytes for every input shape."""
    from otel_mta.signals import _wire
    attrs = wire.encode_attrs_py(wire.LOG_ATTRS, VALUES)
    for severity in range(-1, 27):
        for text in (None, "", "CUSTOM", "é\ud800"):
            for trace_id, span_id in ((None, None), (b"\x01" * 16, None), (b"\x01" * 16, b"\x02" * 8), (b"", b"\x02")):
                for event in (None, "", "zonemta.queued"):
                    args = (severity % 2 * 123456789012345678, 2**64 - 1, severity, "body ü \ud800", attrs,
                            trace_id, span_id, event, text)
                    assert L.encode_log(*args) == L.encode_log_py(*args), args
    assert L.encode_log(1, 2, 9, "b", b"", severity_text="X") == L.encode_log_py(1, 2, 9, "b", b"", severity_text="X")
    for kind in (1, 2, 3, 4, 5):
        for status, message in ((0, None), (1, None), (2, ""), (2, "550 no \ud800")):
            for events in (None, [], [(7, "tls", {"v": "1.3"}), (8, "x", {})]):
                for parent in (None, b"", b"\x03" * 8):
                    args = (b"\x0a" * 16, b"\x0b" * 8, parent, "delivery", kind, 10, 5, attrs, status, message, events)
                    assert T.encode_span(*args) == T.encode_span_py(*args), args
    recs = [L.encode_log_py(i, i, 9, "x" * i * 40, attrs) for i in range(40)]
    groups = [(wire.resource({"service.name": "a"}), wire.scope("s", "1"), recs), (b"", b"", []),
              (wire.resource({"service.name": "b"}), wire.scope("s", "2"), recs[:1])]
    for n in range(len(groups) + 1):
        assert wire.request(groups[:n]) == wire.request_py(groups[:n])
    two = (VALUES, {"extra": 1, "none": None}, {})
    assert wire.encode_attrs(wire.SPAN_ATTRS, two) == wire.encode_attrs_py(wire.SPAN_ATTRS, two)
    # attributes may also be handed over unencoded, as a dict or a tuple of dicts
    for given in (VALUES, two):
        log_args = (1, 2, 9, "b", given, b"\x01" * 16)
        encoded = L.encode_log(1, 2, 9, "b", wire.encode_attrs(wire.LOG_ATTRS, given), b"\x01" * 16)
        assert L.encode_log(*log_args) == L.encode_log_py(*log_args) == encoded
        span_args = (b"\x0a" * 16, b"\x0b" * 8, None, "n", 1, 1, 2, given)
        encoded = T.encode_span(*span_args[:7], wire.encode_attrs(wire.SPAN_ATTRS, given))
        assert T.encode_span(*span_args) == T.encode_span_py(*span_args) == encoded
    assert _wire.encode_log is L.encode_log and _wire.encode_span is T.encode_span and _wire.request is wire.request


def test_bad_arguments_raise_instead_of_crashing():
    import pytest
    for call in (lambda: L.encode_log(1, -1, 9, "b", b""), lambda: L.encode_log(1, 1, 9, 5, b""),
                 lambda: L.encode_log(1, 1, 9, "b", b"", bogus=1), lambda: L.encode_log(1, 1),
                 lambda: T.encode_span(b"", b"", None, "n", 9, 1, 1, b""),
                 lambda: T.encode_span(b"", b"", None, "n", 1, 1, 1, b"", events=[(1, 2)]),
                 lambda: wire.request([(1, 2, 3)]), lambda: wire.request([(b"", b"", [1])]),
                 lambda: wire.encode_attrs(wire.LOG_ATTRS, [1]), lambda: wire.encode_attrs(wire.LOG_ATTRS, {1: 2})):
        with pytest.raises((TypeError, ValueError, OverflowError)):
            call()


# -- attribute value length limits (OTEL_*ATTRIBUTE_VALUE_LENGTH_LIMIT) ----------------
import pytest  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

FREE_KEYS = frozenset({"mta.smtp.response", "error.message"})


@pytest.fixture
def limits():
    """wire.set_limits(...) for one test; no limits again afterwards (they are process-wide)."""
    yield wire.set_limits
    wire.set_limits()


def _decoded(tag, attrs_dict):
    req = ExportLogsServiceRequest.FromString(wire.request([(b"", wire.scope("s", "1"), [
        L.encode_log(1, 1, 9, "b", wire.encode_attrs(tag, attrs_dict))])]))
    return attrs(req.resource_logs[0].scope_logs[0].log_records[0].attributes)


def test_strings_and_each_string_of_an_array_are_cut_to_the_limit_in_characters(limits):
    limits(logs=5, spans=None, free_text=3, free_keys=FREE_KEYS, free_prefixes=("gelf.",))
    before = wire.truncations()
    got = _decoded(wire.LOG_ATTRS, {
        "mta.queue_id": "18c5f3d2a3e",                 # any string: the OTEL limit (5)
        "mta.smtp.response": "550 5.1.1 no such user",   # free text: the smaller one (3)
        "gelf.anything": "abcdef", "short": "abc",
        "mta.recipient.domain": ["example.com", "ex", "éééééé€x"],   # each string of an array
        "n": 123456789, "d": 2.5, "b": True, "bytes": b"0123456789"})   # never cut
    assert got == {"mta.queue_id": "18c5f", "mta.smtp.response": "550", "gelf.anything": "abc",
                   "short": "abc", "mta.recipient.domain": ["examp", "ex", "ééééé"],
                   "n": 123456789, "d": 2.5, "b": True, "bytes": b"0123456789"}
    after = wire.truncations()
    assert after["logs"] - before["logs"] == 5 and after["traces"] == before["traces"]
    # spans have no limit of their own here: only the free-text one
    span = T.encode_span(b"\x01" * 16, b"\x02" * 8, None, "d", 3, 1, 2,
                         {"mta.queue_id": "18c5f3d2a3e", "error.message": "timeout"})
    s = ExportTraceServiceRequest.FromString(wire.request([(b"", wire.scope("s", "1"), [span])]))
    assert attrs(s.resource_spans[0].scope_spans[0].spans[0].attributes) == {
        "mta.queue_id": "18c5f3d2a3e", "error.message": "tim"}
    assert wire.truncations()["traces"] - after["traces"] == 1


def test_no_limit_set_cuts_nothing(limits):
    limits()
    long = "x" * 100_000
    assert _decoded(wire.LOG_ATTRS, {"mta.smtp.response": long, "k": [long]}) == {
        "mta.smtp.response": long, "k": [long]}


TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\ud800\udfff€é"), max_size=40)
VALUE = st.recursive(TEXT | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.booleans() | st.none()
                     | st.binary(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=8)
KEYS = st.sampled_from(["mta.smtp.response", "error.message", "gelf.x", "gelf.", "mta.queue_id", "k", "é"])


@settings(max_examples=400, deadline=None)
@given(attrs_dict=st.dictionaries(KEYS, VALUE, max_size=6), tag=st.sampled_from([wire.LOG_ATTRS, wire.SPAN_ATTRS,
                                                                                  wire.EVENT_ATTRS, 0x0a]),
       logs=st.none() | st.integers(0, 12), spans=st.none() | st.integers(0, 12),
       free=st.none() | st.integers(0, 12), prefixes=st.sampled_from([(), ("gelf.",)]),
       keys=st.sampled_from([frozenset(), FREE_KEYS]))
def test_c_and_python_twins_cut_and_count_alike(attrs_dict, tag, logs, spans, free, prefixes, keys):
    """Differential: under any limits, for any value shapes (lone surrogates,
    nested arrays and maps, cached keys or not), both twins write the same
    bytes and count the same truncations."""
    try:
        wire.set_limits(logs, spans, free, keys, prefixes)
        before = wire.truncations()
        c = wire.encode_attrs(tag, attrs_dict)
        mid = wire.truncations()
        for cached in (frozenset(), frozenset(attrs_dict)):
            py_before = wire.truncations()
            assert wire.encode_attrs_py(tag, attrs_dict, cached) == c
            assert {k: wire.truncations()[k] - py_before[k] for k in before} == \
                   {k: mid[k] - before[k] for k in before}
        # the records' own encoders take the dicts as they are: the same again
        if tag in (wire.LOG_ATTRS, wire.SPAN_ATTRS):
            rec = (1, 2, 9, "b", attrs_dict) if tag == wire.LOG_ATTRS else None
            if rec:
                assert L.encode_log(*rec) == L.encode_log_py(*rec)
            else:
                args = (b"\x01" * 16, b"\x02" * 8, None, "n", 3, 1, 2, attrs_dict, 0, None, [(3, "e", attrs_dict)])
                assert T.encode_span(*args) == T.encode_span_py(*args)
    finally:
        wire.set_limits()
