"""ZoneMTA's HTTP API (default http://127.0.0.1:12080): queue depth per zone
and state, and ZoneMTA's own Prometheus series re-emitted as OTel metrics.

Per poll: `GET /zones` (the enabled zones), `GET /counter/zone/<zone>` for
each, whose `active` and `deferred` are `{"entries": [{"key": zone, "value":
N}], "rows": N}` in ZoneMTA 3.x (plain numbers in older releases; both are
read), and `GET /metrics` (prom-client text, parsed by prometheus_client).
ZoneMTA answers /counter with two queries, active (queued <= now) then
deferred (queued > now), each at its own moment: a delivery deferred between
the two shows in both states in that one answer (seen in tests under load),
and is reported as ZoneMTA answers it.

From /metrics only ZoneMTA's own series are taken, under `zonemta.*` names
(catalog/zonemta_api.yaml). They count the same deliveries the event sources
count as `mta.*`, from ZoneMTA's side: separate names, so nothing is counted
twice. `zonemta_queue_size` (a global total refreshed every 10 s) is left out:
`mta.queue.size` is per zone and current at each poll. prom-client's process_* and nodejs_*
series are left to the host poller; process_start_time_seconds gives the start
time of ZoneMTA's counters, so a ZoneMTA restart is a new start, not a drop.
"""
from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import orjson

from otel_mta.sources import prometheus
from otel_mta.sources.poller import Points, PollError, Poller, redact_url

# prom-client family -> (catalog metric, its prometheus labels in the order of the catalog's attributes)
FAMILIES = {
    "zonemta_delivery_status": ("zonemta.delivery.status", ("status", "zone")),
    "zonemta_message_push": ("zonemta.message.push", ("result",)),
    "zonemta_message_drop": ("zonemta.message.drop", ()),
    "zonemta_bounce_generation": ("zonemta.bounce.generation", ()),
    "zonemta_connection_reuses": ("zonemta.connection.reuses", ()),
    "zonemta_connection_pool_size": ("zonemta.connection.pool.size", ()),
    "zonemta_blacklisted": ("zonemta.blacklisted", ()),
}


def queue_count(doc, state: str, zone: str) -> int:
    """`active`/`deferred` of a /counter answer, in either shape ZoneMTA used."""
    value = doc.get(state) if isinstance(doc, dict) else None
    if isinstance(value, bool):
        raise PollError("bad_response", f"/counter for zone {zone}: {state} is not a count")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dict):
        entries = value.get("entries")
        if isinstance(entries, list):
            total = 0
            for e in entries:
                if isinstance(e, dict) and e.get("key") == zone and isinstance(e.get("value"), (int, float)):
                    total += int(e["value"])
            return total
        if isinstance(value.get("rows"), (int, float)):
            return int(value["rows"])
    raise PollError("bad_response", f"/counter for zone {zone}: no {state} count in the answer")


class ZoneMTAApiPoller(Poller):
    name = "zonemta_api"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline, settings, redact_url(settings.url))
        self.http = prometheus.HttpGetter(settings.url, self.timeout)
        self.max_zones = settings.max_zones
        self._start = prometheus.CounterStart("zonemta")
        self._zones: list[str] = []
        self._queued = (0, 0)
        self._series = 0

    async def _get_json(self, path: str):
        body = await self.http.get(path)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise PollError("bad_response", f"GET {path}: not JSON") from None

    async def collect(self, points: Points) -> None:
        res = self.pipeline.resources.zonemta
        zones_doc = await self._get_json("/zones")
        if not isinstance(zones_doc, list):
            raise PollError("bad_response", "GET /zones: not a list of zones")
        zones = sorted({z["name"] for z in zones_doc
                        if isinstance(z, dict) and isinstance(z.get("name"), str) and z["name"]})
        zones = zones[:self.max_zones]
        gate = asyncio.Semaphore(4)   # a few at a time: each is two counts in ZoneMTA's MongoDB

        async def count(zone: str) -> tuple[int, int]:
            async with gate:
                doc = await self._get_json("/counter/zone/" + quote(zone, safe=""))
            return queue_count(doc, "active", zone), queue_count(doc, "deferred", zone)

        counts = await asyncio.gather(*(count(z) for z in zones))
        for zone, (active, deferred) in zip(zones, counts):
            points.add("mta.queue.size", res, (zone, "active"), active)
            points.add("mta.queue.size", res, (zone, "deferred"), deferred)
        self._series = self._metrics(await self.http.get("/metrics"), points, res)
        self._zones = zones
        self._queued = (sum(a for a, _ in counts), sum(d for _, d in counts))

    def _metrics(self, body: bytes, points: Points, res) -> int:
        """ZoneMTA's own series from /metrics; returns how many were taken."""
        families = prometheus.parse(body, "/metrics")
        now = time.time_ns()
        totals: dict = {}
        taken = 0
        for family in families:
            spec = FAMILIES.get(family.name)
            if spec is None:
                continue
            metric, labels = spec
            counter = family.type == "counter"
            for sample in prometheus.samples(family):
                values = tuple(sample.labels.get(label) or None for label in labels)
                value = prometheus.number(sample.value)
                taken += 1
                if counter:
                    totals[(metric, values)] = value
                else:
                    points.add(metric, res, values, value)
        start = self._start(prometheus.process_start_ns(families, now), totals, now)
        for (metric, values), value in totals.items():
            points.add(metric, res, values, value, start)
        return taken

    def summary(self) -> str:
        active, deferred = self._queued
        zones = ", ".join(self._zones) or "none"
        return f"zones: {zones}; {active} queued, {deferred} deferred; {self._series} series"

    async def close(self) -> None:
        await self.http.close()
