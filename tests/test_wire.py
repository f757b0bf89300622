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
