"""Metric instruments and their cumulative aggregation, exported as OTLP.

Instruments can only be made from catalog entries (otel_mta/catalog/), so no
name, unit or attribute reaches a backend undeclared. Callers pass attribute
*values* as a tuple in the catalog's attribute order: cheap on the hot path, and
a value of None leaves that attribute out.

Temporality is cumulative (the OTLP default) from the sidecar's start; a restart
starts again with a new start time. Totals a poller reads from another process
(Redis, MongoDB, ZoneMTA's /metrics, the host) carry that process's start time.
Each instrument keeps at most `max_series` series; further attribute sets fold
into one series marked `otel.metric.overflow=true`, as the OpenTelemetry SDK's
cardinality limit does.
Export happens once per interval, so the generated protobuf classes are used.
"""
from __future__ import annotations

import bisect
import time
from typing import Callable, Iterable

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from otel_mta import __version__
from otel_mta.catalog import Catalog, MetricDef

OVERFLOW = object()
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


class Instrument:
    def __init__(self, definition: MetricDef, max_series: int):
        self.definition = definition
        self.series: dict = {}
        self.starts: dict = {}   # resource -> start time of observed totals (pollers)
        self.max_series = max_series
        self.overflowed = 0

    def _key(self, resource, values: tuple):
        key = (resource, values)
        if key in self.series or len(self.series) < self.max_series:
            return key
        self.overflowed += 1
        return (resource, OVERFLOW)

    def replace(self, resource, points: dict, start_ns: int | None = None) -> None:
        """Set the resource's series to exactly `points` ({values tuple: value}).

        Pollers call this each cycle so that series that vanished (a zone
        removed, a disk unmounted) stop being exported. For sums, `start_ns` is
        when the observed totals started counting (the target's start), so a
        target restart shows as a new start time rather than a drop.
        """
        for key in [k for k in self.series if k[0] == resource]:
            del self.series[key]
        for values, value in points.items():
            self.observe(value, resource, values)
        if start_ns is None or not points:
            self.starts.pop(resource, None)
        else:
            self.starts[resource] = start_ns

    def clear(self, resource) -> None:
        self.replace(resource, {})

    def observe(self, value, resource, values: tuple = ()) -> None:
        """Set a total counted elsewhere (another process, the exporter's stats)."""
        key = self._key(resource, values)
        if key[1] is OVERFLOW:   # observed totals beyond the limit add up in the overflow series
            self.series[key] = self.series.get(key, 0) + value
        else:
            self.series[key] = value


class Counter(Instrument):
    """Monotonic sum (also used for up-down counters, with `monotonic` False)."""

    def add(self, value, resource, values: tuple = ()) -> None:
        key = (resource, values)
        series = self.series
        old = series.get(key)  # one lookup, not `in` then `+=` (the key's hash is not cached)
        if old is not None:
            series[key] = old + value
        else:
            key = self._key(resource, values)
            series[key] = series.get(key, 0) + value


class Gauge(Instrument):
    """Last value. Pollers `replace` a resource's series each cycle so that
    series that vanished (a zone removed, a disk unmounted) stop being exported."""

    def set(self, value, resource, values: tuple = ()) -> None:
        self.series[self._key(resource, values)] = value

    observe = set


class Histogram(Instrument):
    def __init__(self, definition: MetricDef, max_series: int):
        super().__init__(definition, max_series)
        self.bounds = list(definition.buckets)

    def record(self, value: float, resource, values: tuple = ()) -> None:
        key = (resource, values)
        point = self.series.get(key)
        if point is None:
            key = self._key(resource, values)
            point = self.series.get(key)
            if point is None:
                point = self.series[key] = [0, 0.0, value, value, [0] * (len(self.bounds) + 1)]
        point[0] += 1
        point[1] += value
        if value < point[2]:
            point[2] = value
        if value > point[3]:
            point[3] = value
        point[4][bisect.bisect_left(self.bounds, value)] += 1

    def observe(self, point, resource, values: tuple = ()) -> None:
        """Set a cumulative histogram counted elsewhere (a poller reading
        Prometheus text): point = (count, sum, bucket counts for this
        instrument's bounds and the overflow bucket); min and max unknown."""
        count, total, buckets = point
        key = self._key(resource, values)
        old = self.series.get(key) if key[1] is OVERFLOW else None
        if old is not None:   # beyond the series limit: added up in the overflow series
            count, total = old[0] + count, old[1] + total
            buckets = [a + b for a, b in zip(old[4], buckets)]
        self.series[key] = [count, total, None, None, list(buckets)]


_KINDS = {"counter": Counter, "updowncounter": Counter, "gauge": Gauge, "histogram": Histogram}


def _set_attributes(target, names: tuple, values) -> None:
    if values is OVERFLOW:
        kv = target.add(key="otel.metric.overflow")
        kv.value.bool_value = True
        return
    for name, value in zip(names, values):
        if value is None:
            continue
        kv: KeyValue = target.add(key=name)
        t = type(value)
        if t is bool:
            kv.value.bool_value = value
        elif t is int:
            kv.value.int_value = value
        elif t is float:
            kv.value.double_value = value
        else:
            kv.value.string_value = str(value)


class MetricStore:
    def __init__(self, catalog: Catalog, max_series: int = 2000, start_ns: int | None = None):
        self.catalog = catalog
        self.max_series = max_series
        self.start_ns = start_ns or time.time_ns()
        self.instruments: dict[str, Instrument] = {}
        self._before_collect: list[Callable[[], None]] = []

    def _get(self, name: str, kinds: Iterable[str]) -> Instrument:
        inst = self.instruments.get(name)
        if inst is None:
            definition = self.catalog.metric(name)
            if definition.type not in kinds:
                raise TypeError(f"metric {name} is a {definition.type} in the catalog")
            inst = self.instruments[name] = _KINDS[definition.type](definition, self.max_series)
        return inst

    def counter(self, name: str) -> Counter:
        return self._get(name, ("counter", "updowncounter"))

    def gauge(self, name: str) -> Gauge:
        return self._get(name, ("gauge",))

    def histogram(self, name: str) -> Histogram:
        return self._get(name, ("histogram",))

    def before_collect(self, callback: Callable[[], None]) -> None:
        """Run `callback` before each collection (observed gauges, re-ranking)."""
        self._before_collect.append(callback)

    def collect(self, now_ns: int | None = None) -> tuple[bytes, int] | None:
        """An ExportMetricsServiceRequest of every series, and its point count."""
        for callback in self._before_collect:
            callback()
        now_ns = now_ns or time.time_ns()
        by_resource: dict = {}
        for inst in self.instruments.values():
            for (resource, values), point in inst.series.items():
                by_resource.setdefault(resource, {}).setdefault(inst, []).append((values, point))
        if not by_resource:
            return None
        request = ExportMetricsServiceRequest()
        points = 0
        for resource, per_inst in by_resource.items():
            rm = request.resource_metrics.add()
            rm.resource.MergeFromString(resource.encoded)
            sm = rm.scope_metrics.add()
            sm.scope.name = "otel-mta"
            sm.scope.version = __version__
            for inst, series in per_inst.items():
                d = inst.definition
                metric = sm.metrics.add(name=d.name, description=d.description, unit=d.unit)
                for values, point in series:
                    points += 1
                    if d.type == "histogram":
                        metric.histogram.aggregation_temporality = CUMULATIVE
                        dp = metric.histogram.data_points.add(
                            start_time_unix_nano=inst.starts.get(resource, self.start_ns), time_unix_nano=now_ns,
                            count=point[0], sum=point[1], bucket_counts=point[4], explicit_bounds=inst.bounds)
                        if point[2] is not None:   # observed histograms (pollers) know no min and max
                            dp.min, dp.max = point[2], point[3]
                    elif d.type == "gauge":
                        dp = metric.gauge.data_points.add(time_unix_nano=now_ns)
                        _number(dp, point)
                    else:
                        metric.sum.aggregation_temporality = CUMULATIVE
                        metric.sum.is_monotonic = d.type == "counter"
                        dp = metric.sum.data_points.add(start_time_unix_nano=inst.starts.get(resource, self.start_ns),
                                                        time_unix_nano=now_ns)
                        _number(dp, point)
                    _set_attributes(dp.attributes, d.attributes, values)
        return request.SerializeToString(), points


def _number(dp, value) -> None:
    if type(value) is int:
        dp.as_int = value
    else:
        dp.as_double = float(value)
