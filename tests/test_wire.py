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
