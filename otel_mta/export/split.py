"""Splits an OTLP export request into smaller ones, each resource and scope
kept with its records.

Used on rare paths only (a request over the size cap, a receiver that refused
one for its size), so it decodes with the generated opentelemetry-proto
classes. The units it moves are what the exporter counts: log records, spans,
metric data points (a metric with many points is split between its points,
its name, unit and temporality copied to each part).
"""
from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

REQUESTS = {"logs": ExportLogsServiceRequest, "traces": ExportTraceServiceRequest,
            "metrics": ExportMetricsServiceRequest}
# request -> resource items -> scope items -> records
_FIELDS = {"logs": ("resource_logs", "scope_logs", "log_records"),
           "traces": ("resource_spans", "scope_spans", "spans"),
           "metrics": ("resource_metrics", "scope_metrics", "metrics")}


class Unsplittable(ValueError):
    """The payload is not a request of that signal (it cannot be decoded)."""


def _units(signal: str, request) -> list[tuple]:
    """(resource index, scope index, metric index or -1, record or data point), in order."""
    res_f, scope_f, items_f = _FIELDS[signal]
    out = []
    for ri, rx in enumerate(getattr(request, res_f)):
        for si, sx in enumerate(getattr(rx, scope_f)):
            for mi, item in enumerate(getattr(sx, items_f)):
                if signal != "metrics":
                    out.append((ri, si, -1, item))
                    continue
                kind = item.WhichOneof("data")
                for point in (getattr(item, kind).data_points if kind else ()):
                    out.append((ri, si, mi, point))
    return out


def _build(signal: str, request, units: list[tuple]):
    res_f, scope_f, items_f = _FIELDS[signal]
    out = REQUESTS[signal]()
    at = (None, None, None)  # the (resource, scope, metric) being filled
    r_out = s_out = d_out = None
    for ri, si, mi, item in units:
        if ri != at[0]:
            r_src = getattr(request, res_f)[ri]
            r_out = getattr(out, res_f).add(schema_url=r_src.schema_url)
            r_out.resource.CopyFrom(r_src.resource)
            at = (ri, None, None)
        if si != at[1]:
            s_src = getattr(r_src, scope_f)[si]
            s_out = getattr(r_out, scope_f).add(schema_url=s_src.schema_url)
            s_out.scope.CopyFrom(s_src.scope)
            at = (ri, si, None)
        if mi < 0:
            getattr(s_out, items_f).append(item)
            continue
        if mi != at[2]:
            m_src = s_src.metrics[mi]
            m_out = s_out.metrics.add(name=m_src.name, description=m_src.description, unit=m_src.unit)
            m_out.metadata.extend(m_src.metadata)
            kind = m_src.WhichOneof("data")
            d_out = getattr(m_out, kind)
            d_out.SetInParent()
            for field, value in getattr(m_src, kind).ListFields():
                if field.name != "data_points":   # temporality, monotonicity
                    setattr(d_out, field.name, value)
            at = (ri, si, mi)
        d_out.data_points.append(item)
    return out


def _decode(signal: str, payload: bytes):
    try:
        return REQUESTS[signal].FromString(payload)
    except Exception as err:  # a DecodeError
        raise Unsplittable(f"not an OTLP {signal} request: {err}") from None


def _halves(units: list[tuple]) -> tuple[list, list]:
    """Cut where half the bytes are on each side (one huge record goes alone)."""
    sizes = [u[3].ByteSize() for u in units]
    half, run, cut = sum(sizes) / 2, 0, 1
    for cut, size in enumerate(sizes[:-1], 1):
        run += size
        if run >= half:
            break
    return units[:cut], units[cut:]


def halve(signal: str, payload: bytes) -> list[tuple[bytes, int]]:
    """Two requests of about half the bytes each: [(payload, items), (payload, items)].
    A request of one item (or none) comes back as it is."""
    request = _decode(signal, payload)
    units = _units(signal, request)
    if len(units) < 2:
        return [(payload, len(units))]
    return [(_build(signal, request, part).SerializeToString(), len(part)) for part in _halves(units)]


def fit(signal: str, payload: bytes, max_bytes: int) -> list[tuple[bytes, int]]:
    """Requests of at most `max_bytes` each, in order, by halving; a single
    item larger than that goes alone."""
    request = _decode(signal, payload)
    out: list = []

    def add(units: list) -> None:
        part = _build(signal, request, units)
        if len(units) > 1 and part.ByteSize() > max_bytes:
            first, second = _halves(units)
            add(first)
            add(second)
        else:
            out.append((part.SerializeToString(), len(units)))

    units = _units(signal, request)
    if len(units) < 2:
        return [(payload, len(units))]
    add(units)
    return out


def count(signal: str, payload: bytes) -> int:
    """Records, spans or data points in a request."""
    return len(_units(signal, _decode(signal, payload)))
