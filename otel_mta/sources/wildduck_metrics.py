"""WildDuck's own Prometheus metrics (its [metrics] listener, default
http://127.0.0.1:8081/metrics; WildDuck >= 1.50) re-emitted as OTel metrics
under wildduck.* names (catalog/wildduck.yaml, docs/wildduck.md).

One `GET /metrics` per poll, parsed by prometheus_client. Counters and
histograms are WildDuck's totals since its process started: they go out
cumulative with process_start_time_seconds as their start, so a WildDuck
restart is a new start, not a drop (in cluster mode WildDuck's aggregated
answer has no process start: the first poll, or totals going down, set it).
A family is taken only when its type is the catalog's and, for a histogram,
its bucket bounds are the catalog's (WildDuck's own) and its counts add up: if
a WildDuck release changes them, that family is left out and `otel-mta check`
names it, rather than going out wrong.

All series describe the WildDuck beside the sidecar: resource service.name
`wildduck`. WildDuck labels nothing personal (no user, address or IP).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from otel_mta.sources import prometheus
from otel_mta.sources.poller import Points, Poller, redact_url

log = logging.getLogger("otel_mta.wildduck")


def _yes_no(value: str | None):
    return {"yes": True, "no": False}.get(value)


def _http_status(value: str | None):
    return int(value) if value and value.isdecimal() and len(value) == 3 else None


@dataclass(frozen=True)
class Family:
    metric: str                 # catalog name
    labels: tuple[str, ...]     # WildDuck's labels, in the order of the catalog's attributes
    convert: tuple = ()         # (label, function) for values that change type (the rest stay strings)

    def values(self, labels: dict) -> tuple:
        out = [labels.get(name) or None for name in self.labels]
        for name, fn in self.convert:
            i = self.labels.index(name)
            out[i] = fn(out[i])
        return tuple(out)


# WildDuck's exposed name (lib/metrics.js) -> what it becomes
FAMILIES = {
    "wildduck_service_up": Family("wildduck.service.up", ("service",)),
    "wildduck_connections": Family("wildduck.connection.count", ("service",)),
    "wildduck_connections_total": Family("wildduck.connection.accepted", ("service", "secure"),
                                         (("secure", _yes_no),)),
    "wildduck_auth_attempts_total": Family("wildduck.auth.attempts", ("service", "scope", "result")),
    "wildduck_imap_command_duration_seconds": Family("wildduck.imap.command.duration", ("command", "result")),
    "wildduck_pop3_command_duration_seconds": Family("wildduck.pop3.command.duration", ("command", "result")),
    "wildduck_lmtp_recipients_total": Family("wildduck.lmtp.recipients", ("result",)),
    "wildduck_lmtp_message_size_bytes": Family("wildduck.lmtp.message.size", ("result",)),
    "wildduck_message_operation_duration_seconds": Family(
        "wildduck.message.operation.duration", ("operation", "source", "result")),
    "wildduck_api_request_duration_seconds": Family(
        "wildduck.api.request.duration", ("method", "route", "status"), (("status", _http_status),)),
    "wildduck_tasks": Family("wildduck.task.queue.size", ("type", "status")),
    "wildduck_bullmq_jobs": Family("wildduck.job.queue.size", ("queue", "state")),
}


def exposed_name(family) -> str:
    """The name as WildDuck writes it: the parser drops a counter's `_total`."""
    return family.name + "_total" if family.type == "counter" else family.name


def histogram_points(family, spec: Family, bounds: tuple[float, ...]) -> dict | None:
    """{attribute values: (count, sum, bucket counts)} of a Prometheus
    histogram family; None when its bucket bounds are not `bounds` or a
    series is not a histogram (counts that are not finite, or that go down)."""
    series: dict = {}
    for sample in family.samples:
        labels = dict(sample.labels)
        le = labels.pop("le", None)
        entry = series.setdefault(tuple(sorted(labels.items())),
                                  {"labels": labels, "buckets": {}, "sum": 0.0, "count": None})
        if sample.name == family.name + "_bucket" and le is not None:
            try:
                entry["buckets"][float(le)] = sample.value
            except ValueError:
                return None
        elif sample.name == family.name + "_sum":
            entry["sum"] = sample.value
        elif sample.name == family.name + "_count":
            entry["count"] = sample.value
    out: dict = {}
    for entry in series.values():
        les = sorted(b for b in entry["buckets"] if b != math.inf)
        if tuple(les) != tuple(bounds):
            return None
        count = entry["count"] if entry["count"] is not None else entry["buckets"].get(math.inf)
        cumulative = [entry["buckets"][b] for b in les] + [count]
        if count is None or not all(math.isfinite(c) and c >= 0 for c in cumulative) \
                or any(b < a for a, b in zip(cumulative, cumulative[1:])) or not math.isfinite(entry["sum"]):
            return None
        counts = [int(b - a) for a, b in zip([0.0] + cumulative, cumulative)]
        out[spec.values(entry["labels"])] = (int(count), float(entry["sum"]), tuple(counts))
    return out


class WildDuckMetricsPoller(Poller):
    name = "wildduck_metrics"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline, settings, redact_url(settings.url))
        # the URL names the metrics page itself (WildDuck serves it at /metrics)
        self.http = prometheus.HttpGetter(settings.url, self.timeout)
        self.resource = pipeline.resources.producer("wildduck")
        self._start = prometheus.CounterStart("wildduck")
        self._version: str | None = None
        self._series = 0
        self._skipped: list[str] = []

    async def collect(self, points: Points) -> None:
        families = prometheus.parse(await self.http.get(), self.http.base_path)
        now = time.time_ns()
        catalog = self.pipeline.metrics.catalog
        res = self.resource
        levels: list = []      # (metric, values, value)
        totals: dict = {}      # (metric, values) -> value: counters and histograms
        counts: dict = {}      # what tells a restart: counter values and histogram counts
        skipped = []
        version = None
        for family in families:
            name = exposed_name(family)
            if name == "wildduck_info":
                version = next((s.labels.get("version") for s in family.samples), None)
                continue
            spec = FAMILIES.get(name) or FAMILIES.get(family.name)   # the latter: a gauge turned counter
            if spec is None:
                continue
            if family.type != catalog.metric(spec.metric).type:   # a WildDuck release changed it
                skipped.append(name)
                continue
            if family.type == "histogram":
                hist = histogram_points(family, spec, catalog.metric(spec.metric).buckets)
                if hist is None:
                    skipped.append(name)
                    continue
                for values, point in hist.items():
                    totals[(spec.metric, values)] = point
                    counts[(spec.metric, values)] = point[0]
            elif family.type == "counter":
                for sample in prometheus.samples(family):
                    values = spec.values(sample.labels)
                    totals[(spec.metric, values)] = counts[(spec.metric, values)] = prometheus.number(sample.value)
            else:
                for sample in prometheus.samples(family):
                    levels.append((spec.metric, spec.values(sample.labels),
                                   prometheus.number(sample.value)))
        start = self._start(prometheus.process_start_ns(families, now), counts, now)
        for metric, values, value in levels:
            points.add(metric, res, values, value)
        for (metric, values), value in totals.items():
            points.add(metric, res, values, value, start)
        self._series = len(levels) + len(totals)
        self._version = version
        if skipped and skipped != self._skipped and not self._checking:
            log.warning("wildduck_metrics %s: left out %s: type or buckets not as the catalog declares "
                        "(did a WildDuck release change them? otel_mta/catalog/wildduck.yaml)",
                        self.target, ", ".join(skipped))
        self._skipped = skipped

    def summary(self) -> str:
        text = f"WildDuck {self._version or '(version unknown)'}; {self._series} series"
        if self._skipped:
            text += "; left out (type or buckets not as the catalog declares): " + ", ".join(self._skipped)
        return text

    async def close(self) -> None:
        await self.http.close()
