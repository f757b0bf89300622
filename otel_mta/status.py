"""What this node is doing right now, for `otel-mta top`: GET /status on the
health endpoint (docs/top.md).

Read-only and cheap: it reads what the sidecar holds anyway (the metric store,
the sources, the exporter) and answers with a few KiB of JSON. Bounded: at most
`?top=N` (default 10, at most 50) zones, domains and sending IPs. Rates cover
the last WINDOW_S (5 minutes; since start when the sidecar is younger), from
copies of the cumulative counters taken every SAMPLE_S.

No personal data beyond the privacy settings: recipient domains are those the
metrics carry (top-N, the rest `other`; none when privacy.recipient is drop),
replies are the logs' `mta.smtp.response` (addresses masked unless recipients
are `full`), IPs are the local sending addresses.

This module must not import the terminal UI: the sidecar never loads it
(otel_mta/top.py is the client).
"""
from __future__ import annotations

import socket
import time
from collections import deque
from datetime import datetime, timezone

from aiohttp import web

from otel_mta import __version__
from otel_mta.sources.poller import redact_url

SCHEMA = "otel-mta.status/v1"
PATH = "/status"
WINDOW_S = 300.0
SAMPLE_S = 10.0
DEFAULT_TOP = 10
MAX_TOP = 50
OUTCOMES = ("delivered", "deferred", "rejected")


class StatusBoard:
    def __init__(self, app, window_s: float = WINDOW_S):
        self.app = app
        self.pipeline = app.pipeline
        self.window_s = window_s
        self.started = time.monotonic()
        self.host = socket.gethostname()
        m = self.pipeline.metrics
        self._attempts = m.counter("mta.delivery.attempts")
        self._accepted = m.counter("otelmta_receiver_accepted_records")
        self._refused = m.counter("otelmta_receiver_refused_records")
        self._dropped = m.counter("otelmta_receiver_dropped_records")
        self._poll_failures = m.counter("otelmta_poller_failures")
        self._queue_size = m.gauge("mta.queue.size")
        self._oldest = m.gauge("mta.queue.oldest_age")
        # (monotonic time, totals): the first is the newest at least window_s old
        self._samples: deque = deque([(self.started, {})])
        self._keys: dict = {}   # one tuple per key, shared by the samples (31 of them)

    # -- the counters over time ----------------------------------------------------
    def _totals(self) -> dict:
        self.pipeline.mail.flush_counts()
        for source in self.app.sources:
            source.flush_counts()
        totals: dict = {}
        keys = self._keys
        if len(keys) > 100_000:   # series come and go (top-N domains): forget the old tuples now and then
            keys.clear()
        for (zone, outcome, ip, _, domain), n in self._series(self._attempts):
            for key in (("zone", zone, outcome), ("ip", ip, outcome), ("domain", domain, outcome)):
                key = keys.setdefault(key, key)
                totals[key] = totals.get(key, 0) + n
        for (receiver, _), n in self._series(self._accepted):
            key = keys.setdefault(("receiver", receiver), ("receiver", receiver))
            totals[key] = totals.get(key, 0) + n
        return totals

    @staticmethod
    def _series(metric):
        return ((values, n) for (_, values), n in list(metric.series.items()) if type(values) is tuple)

    def sample(self) -> None:
        """Every SAMPLE_S (app.py): keep the counters' history for the window."""
        now = time.monotonic()
        samples = self._samples
        samples.append((now, self._totals()))
        while len(samples) > 1 and samples[1][0] <= now - self.window_s:
            samples.popleft()

    # -- the document ----------------------------------------------------------------
    def snapshot(self, top: int = DEFAULT_TOP) -> dict:
        now = time.monotonic()
        totals = self._totals()
        since, base = self._samples[0]
        elapsed = max(now - since, 1e-3)
        delta = {k: max(v - base.get(k, 0), 0) for k, v in totals.items()}
        per_minute = 60.0 / elapsed
        return {
            "schema": SCHEMA,
            "version": __version__,
            "host": self.host,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "uptime_s": round(now - self.started, 1),
            "window_s": round(elapsed, 1),
            "zones": self._zones(delta, per_minute, top),
            "domains": self._domains(delta, top),
            "sending_ips": self._ips(delta, top),
            "sources": [self._source(s, delta, elapsed) for s in self.app.sources],
            "export": self._export(),
        }

    def _zones(self, delta: dict, per_minute: float, top: int) -> list:
        zones: dict = {}

        def zone(name):
            return zones.setdefault(name, {"zone": name, "queue": {"active": None, "deferred": None},
                                           "oldest_age_s": {"active": None, "deferred": None},
                                           "per_minute": dict.fromkeys(OUTCOMES, 0.0)})

        for (kind, name, outcome), n in ((k, v) for k, v in delta.items() if k[0] == "zone"):
            if outcome in OUTCOMES:
                zone(name)["per_minute"][outcome] = round(n * per_minute, 1)
        for gauge, field in ((self._queue_size, "queue"), (self._oldest, "oldest_age_s")):
            for (_, values), value in list(gauge.series.items()):
                if type(values) is tuple and values[1] in ("active", "deferred"):
                    zone(values[0])[field][values[1]] = round(value, 1) if field == "oldest_age_s" else value
        ranked = sorted(zones.values(), key=lambda z: (-(z["queue"]["active"] or 0) - (z["queue"]["deferred"] or 0),
                                                       -sum(z["per_minute"].values()), str(z["zone"])))
        return ranked[:top]

    def _domains(self, delta: dict, top: int) -> list:
        counts: dict = {}
        for (kind, name, outcome), n in ((k, v) for k, v in delta.items() if k[0] == "domain"):
            if name is not None and outcome in OUTCOMES:
                counts.setdefault(name, dict.fromkeys(OUTCOMES, 0))[outcome] += n
        failing = [(d, c) for d, c in counts.items() if c["deferred"] or c["rejected"]]
        failing.sort(key=lambda dc: (-dc[1]["deferred"] - dc[1]["rejected"], dc[0]))
        out = []
        now_ns = time.time_ns()
        for domain, c in failing[:top]:
            last = self.pipeline.mail.last_replies.get(domain)
            out.append({"domain": domain, **c, "last_reply": None if last is None else {
                "outcome": last[0], "reply": last[1], "age_s": round(max(now_ns - last[2], 0) / 1e9, 1)}})
        return out

    def _ips(self, delta: dict, top: int) -> list:
        counts: dict = {}
        for (kind, ip, outcome), n in ((k, v) for k, v in delta.items() if k[0] == "ip"):
            if ip is not None and outcome in OUTCOMES:
                counts.setdefault(ip, dict.fromkeys(OUTCOMES, 0))[outcome] += n
        ranked = sorted(counts.items(), key=lambda ic: (-sum(ic[1].values()), ic[0]))[:top]
        return [{"ip": ip, "attempts": sum(c.values()), **c,
                 "reject_ratio": round(c["rejected"] / max(sum(c.values()), 1), 4)} for ip, c in ranked]

    def _source(self, source, delta: dict, elapsed: float) -> dict:
        status = source.status()
        if "up" in status:       # a poller (sources/poller.py)
            up = status["up"]
            failures = {reason: n for (poller, _, reason), n in self._series(self._poll_failures)
                        if poller == source.name}
            return {"name": source.name, "kind": "poller", "endpoint": status["endpoint"],
                    "state": "starting" if up is None else "ok" if up else "failing",
                    "last_error": status.get("last_error"), "last_success_age_s": status.get("last_success_age_s"),
                    "failures": failures}
        refused: dict = {}
        dropped: dict = {}
        for metric, out in ((self._refused, refused), (self._dropped, dropped)):
            for (receiver, _, reason), n in self._series(metric):
                if receiver == source.name:
                    out[reason] = out.get(reason, 0) + n
        return {"name": source.name, "kind": "receiver", "endpoint": status["endpoint"],
                "state": "ok" if status["ready"] else "down",
                "records_per_s": round(delta.get(("receiver", source.name), 0) / elapsed, 1),
                "refused": refused, "dropped": dropped}

    def _export(self) -> dict:
        exporter = self.app.exporter
        st, q = exporter.stats, exporter.queue
        failed: dict = {}
        for (_, reason), n in list(st.failed.items()):
            failed[reason] = failed.get(reason, 0) + n
        spool = q.spool
        endpoint = exporter.sender.endpoint
        if "@" in endpoint or "?" in endpoint:   # credentials or tokens in the URL stay in
            endpoint = redact_url(endpoint if "://" in endpoint else "//" + endpoint).lstrip("/")
        return {"exporter": exporter.name, "endpoint": endpoint,
                "state": "ok" if exporter.healthy else "failing", "last_error": st.last_error or None,
                "last_success_age_s": round((time.time_ns() - st.last_success_ns) / 1e9, 1)
                if st.last_success_ns else None,
                "queue": {"bytes": q.bytes, "capacity": q.max_bytes},
                "spool": None if spool is None else {"bytes": spool.size, "capacity": spool.max_bytes},
                "sent": dict(st.sent), "failed": failed, "retries": st.retries, "splits": st.splits,
                "failing_signals": exporter.failing}


def add_routes(webapp: web.Application, board: StatusBoard) -> None:
    async def status(request: web.Request) -> web.Response:
        raw = request.query.get("top", str(DEFAULT_TOP))
        try:
            top = int(raw)
            if not 1 <= top <= MAX_TOP:
                raise ValueError
        except ValueError:
            return web.json_response({"error": f"top must be a whole number from 1 to {MAX_TOP}"}, status=400)
        return web.json_response(board.snapshot(top), headers={"Cache-Control": "no-store"})

    webapp.router.add_get(PATH, status)
