"""What goes wrong during the pipeline run (pipeline.py), each through its real
cause, so that every series an incident makes is in the backends and every
dashboard panel and rule about it is checked on data.

Mail-side, through the real ZoneMTA (sidecar "mail-0"):
- a sending IP on blocklists: the zone `listed` sends from its own pool
  address, 127.0.0.2; the SMTP sink, playing three receivers, refuses that
  client with replies real receivers give. ZoneMTA itself categorises them
  from its config/bounces.txt: Spamhaus' "blocked using zen.spamhaus.org"
  (blacklist, deferred), Gmail's "unusual rate of unsolicited mail" (block,
  deferred) and "Local Policy Violation" (policy, rejected, so ZoneMTA also
  queues a bounce: QUEUE_BOUNCE);
- drops: a domain on ZoneMTA's suppression list (POST /suppressionlist), so
  ZoneMTA drops its deliveries (DROP);
- deletions: deferred deliveries an operator deletes (DELETE /message/:id/:seq,
  DELETED).

Sidecar-side, a third sidecar "incident-0", beside a second ZoneMTA whose
remote log tools/traffic.py's mix plays (its own queue ids):
- its Collector connection goes through a TcpProxy that is down at the start
  and again in the middle (OUTAGES), with the spool on and a small export
  queue and spool: export requests queue, spool, then are refused
  (otelmta_exporter_send_failed_*{reason="queue_full"}), and the spool drains
  when the Collector is back;
- its remote-log socket has a 4 KiB receive buffer and no reading thread; the
  mix arrives partly as a steady trickle (log records and spans all along, so
  every signal meets the full queue and spool) and partly in bursts: the
  kernel drops datagrams (kernel_overflow);
- malformed and truncated datagrams on its remote-log and GELF ports (refused);
- its Redis poller points at a port where nothing listens (poller failures,
  otelmta_poller_up 0).

Everything here carries labels no healthy part of the run has (INCIDENT_LABELS),
so the rule tests can tell the alerts these incidents must raise from the
ones healthy traffic must not.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass, field

from tests.stack.proc import free_port
from tests.stack.tcp_proxy import TcpProxy

INCIDENT_POD = "incident-0"
LISTED_ZONE, LISTED_IP = "listed", "127.0.0.2"
# recipient domain -> (what the receiver answers the listed IP, messages sent)
LISTED = {
    "blocklisted.test": ("554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.spamhaus.org; "
                         "https://www.spamhaus.org/query/ip/127.0.0.2", 40),
    "bigmail.test": ("421 4.7.0 [127.0.0.2] Our system has detected an unusual rate of unsolicited mail "
                     "originating from your IP address. To protect our users from spam, mail sent from your IP "
                     "address has been temporarily rate limited. gsmtp", 15),
    "strict.test": ("550 5.7.0 Local Policy Violation", 20),
}
# 75 attempts from the listed IP: SendingIpRefused counts at least 50 in its
# window (Prometheus' rate() misses the first increment of each new series);
# under 100 in the zone (ZoneDeferralRateHigh's and BounceRateHigh's floor)
# and under 20 deferred to one domain (DomainDeferralRateHigh's): ZoneMTA
# rejects blocklisted.test's mail after the first deferral (its IP is then
# "blacklisted" for the domain), so only SendingIpRefused fires on Prometheus.
SUPPRESSED_DOMAIN, SUPPRESSED_MESSAGES = "suppressed.test", 3
HELD_DOMAIN, HELD_MESSAGES, HELD_REPLY = "held.test", 3, "452 4.2.2 Mailbox full, try again later"
INCIDENT_LABELS = {"instance": {INCIDENT_POD}, "mta_sending_ip": {LISTED_IP}, "mta_zone": {LISTED_ZONE},
                   "mta_recipient_domain": {*LISTED, SUPPRESSED_DOMAIN, HELD_DOMAIN}}
# seconds from the start of the traffic: the Collector unreachable for incident-0
OUTAGES = [(0.0, 15.0), (27.0, 38.0)]
BURSTS = [2, 7, 12, 17, 22, 30, 35, 41, 46]     # the second ZoneMTA's remote log, in bursts ...
TRICKLE_SHARE, TRICKLE_SECONDS = 0.4, 47.0       # ... after this share of it, a few datagrams a second
SPREAD = 36.0                                    # the listed zone's mail goes out over this many seconds
INCIDENT_MESSAGES = 300                           # its messages (tools/traffic.py's mix)
SIDECAR_CONFIG = """\
sources:
  remote_log: {receive_buffer: 4KiB, queue_size: 0}
  redis: {interval: 1s}
exporter:
  queue_size: 32KiB
  max_backoff: 2s     # retries every 2 s at most: back within the run's short up windows (default 30 s)
"""


def zonemta_config(sink) -> dict:
    """ZoneMTA config for the zone whose IP receivers refuse."""
    return {"pools": {LISTED_ZONE: [{"address": LISTED_IP, "name": "listed.localhost"}]},
            "zones": {LISTED_ZONE: {"host": sink.host, "port": sink.port, "processes": 1, "connections": 2,
                                    "pool": LISTED_ZONE, "ignoreIPv6": True, "recipientDomains": list(LISTED)}}}


def script_sink(sink) -> None:
    for domain, (reply, _) in LISTED.items():
        sink.reply("@" + domain, reply, client=LISTED_IP)
    sink.reply("@" + HELD_DOMAIN, HELD_REPLY)


def refusals_expected() -> int:
    """Recipients the sink refuses because of these incidents (held mail: once each)."""
    return sum(n for _, n in LISTED.values()) + HELD_MESSAGES


def garbage_remote_log(valid: bytes) -> list[bytes]:
    """What a remote-log port gets from a wrong producer: a truncated entry, a
    byte msgpack-js never writes, a value that is no entry."""
    return [valid[: len(valid) // 2], b"\xc1" + valid[1:], b"\x93\x01\x02\x03"]


def garbage_gelf() -> list[bytes]:
    """GELF that cannot be read: cut-off zlib, compressed half a JSON object,
    no short_message, plain text."""
    full = json.dumps({"version": "1.1", "host": "mx1", "short_message": "MTA [QUEUED] x"}).encode()
    return [zlib.compress(full)[:-6], zlib.compress(full[: len(full) // 2]),
            zlib.compress(json.dumps({"version": "1.1", "host": "mx1"}).encode()), b"hello, not gelf"]


@dataclass
class IncidentRun:
    """What the incidents did, for the tests: when the Collector was away from
    incident-0 ((down, up) in epoch seconds, as the proxy switched), and the
    mail they sent."""
    outages: list = field(default_factory=list)
    message_ids: list = field(default_factory=list)
    deleted: list = field(default_factory=list)      # (queue id, seq) deleted through the API


class Incidents:
    """Drives the incidents on two threads, each on its own timeline (seconds
    from `start()`): the mail through the real ZoneMTA (an SMTP transaction can
    take a while on a busy machine), and incident-0's troubles."""

    def __init__(self, zm, col_grpc_endpoint: str, datagrams: list[bytes]):
        self.zm = zm
        host, port = col_grpc_endpoint.rsplit(":", 1)
        self.proxy = TcpProxy((host, int(port)))            # down until the first outage ends
        self.remote_log = free_port(socket.SOCK_DGRAM)
        self.gelf = free_port(socket.SOCK_DGRAM)
        self.dead_port = free_port()                       # nothing ever listens here
        self.datagrams = datagrams
        self.record = IncidentRun()
        self.status = None                                 # () -> incident-0's /status (set by the run)
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._stop = threading.Event()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def sidecar_env(self) -> dict:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.proxy.endpoint,
                "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{self.remote_log}",
                "OTEL_MTA_GELF_ENDPOINT": f"127.0.0.1:{self.gelf}",
                "OTEL_MTA_REDIS_URL": f"redis://127.0.0.1:{self.dead_port}/0",
                "OTEL_MTA_HOST_METRICS": "off",
                "OTEL_MTA_SPOOL": "true", "OTEL_MTA_SPOOL_MAX_SIZE": "32KiB"}

    def prepare(self) -> None:
        """Before the traffic: the suppression list entry."""
        body = json.dumps({"domain": SUPPRESSED_DOMAIN}).encode()
        req = urllib.request.Request(self.zm.api_url + "/suppressionlist", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert "suppressed" in json.loads(resp.read()), "ZoneMTA did not take the suppression entry"

    def start(self) -> None:
        t0 = time.monotonic()
        self._away_since = time.time()        # the proxy starts down
        for name, events in (("incidents-mail", self._mail()), ("incidents-sidecar", self._sidecar())):
            thread = threading.Thread(target=self._run, args=(t0, events), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self) -> IncidentRun:
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]
        return self.record

    def finish(self, timeout: float = 30.0) -> None:
        """After the timelines: delete the held deliveries ZoneMTA had not deferred
        yet when their turn came (on a busy machine it tries them late)."""
        deadline = time.monotonic() + timeout
        while len(self.record.deleted) < HELD_MESSAGES:
            self._delete_held()
            if time.monotonic() > deadline:
                raise AssertionError(f"held deliveries not deferred in {timeout}s: deleted {self.record.deleted}")
            time.sleep(0.5)

    def wait_drained(self, timeout: float = 30.0) -> None:
        """incident-0 is back and has sent everything it queued and spooled, and
        exported that (its last spool and queue sizes are 0). Stopped any earlier,
        its last exported spool size stays in the backends for their staleness
        window and ExportBacklog goes pending on a backlog that was gone."""
        deadline = time.monotonic() + timeout
        while True:
            export = self.status()["export"]
            if export["state"] == "ok" and not export["queue"]["bytes"] \
                    and not (export["spool"] or {}).get("bytes"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"incident-0 did not drain its export queue and spool in {timeout}s: {export}")
            time.sleep(0.2)
        time.sleep(2.5)               # two metric exports (1 s apart) that say so

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.proxy.stop()
        self._udp.close()

    # -- the timelines -------------------------------------------------------------------
    def _mail(self) -> list[tuple[float, object]]:
        events: list = []
        left = {domain: n for domain, (_, n) in LISTED.items()}
        listed = []                  # the domains taking turns
        while any(left.values()):
            for domain in left:
                if left[domain]:
                    listed.append(domain)
                    left[domain] -= 1
        events += [(1.0 + SPREAD * i / len(listed), lambda d=d, i=i: self._send(f"rcpt{i}@{d}", "listed", i))
                   for i, d in enumerate(listed)]
        for i in range(SUPPRESSED_MESSAGES):
            events.append((4.0 + 12 * i, lambda i=i: self._send(f"gone{i}@{SUPPRESSED_DOMAIN}", "suppressed", i)))
        for i in range(HELD_MESSAGES):
            events.append((3.0 + 12 * i, lambda i=i: self._send(f"full{i}@{HELD_DOMAIN}", "held", i)))
            events.append((8.0 + 12 * i, self._delete_held))
        return sorted(events, key=lambda e: e[0])

    def _sidecar(self) -> list[tuple[float, object]]:
        events: list = []
        for start, end in OUTAGES:
            if start > 0:
                events.append((start, self._collector_away))
            events.append((end, lambda planned=end - start: self._collector_back(planned)))
        steady = int(len(self.datagrams) * TRICKLE_SHARE)
        trickle, bursts = self.datagrams[:steady], self.datagrams[steady:]
        events += [(0.5 + TRICKLE_SECONDS * i / len(trickle), lambda d=d: self._burst([d]))
                   for i, d in enumerate(trickle)]
        events += [(t, lambda c=c: self._burst(c)) for t, c in zip(BURSTS, _split(bursts, len(BURSTS)))]
        events += [(1.0 + 2.0 * i, self._garbage) for i in range(23)]
        return sorted(events, key=lambda e: e[0])

    def _run(self, t0: float, events: list) -> None:
        try:
            for at, action in events:
                pause = t0 + at - time.monotonic()
                if pause > 0 and self._stop.wait(pause):
                    return
                action()
        except BaseException as err:   # re-raised in the test's thread by join()
            self._errors.append(err)

    def _collector_away(self) -> None:
        """Take the Collector away again, once incident-0 is back from the last
        outage and has delivered what it lost then (its failure counts): the
        second outage's losses then show as an increase in the backends."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            export = self.status()["export"]
            if export["state"] == "ok" and sum(export["failed"].values()) and not export["queue"]["bytes"] \
                    and not (export["spool"] or {}).get("bytes"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"incident-0 did not recover from the first outage: {self.status()['export']}")
        time.sleep(2.5)               # two metric exports with the counts
        self.proxy.down()
        self._away_since = time.time()

    def _collector_back(self, planned: float) -> None:
        # an outage lasts as planned even when it started late (it waited for
        # the sidecar's recovery): long enough to fill the queue and the spool
        left = self._away_since + planned - time.time()
        if left > 0:
            time.sleep(left)
        self.proxy.up()
        self.record.outages.append((self._away_since, time.time()))

    def _send(self, rcpt: str, kind: str, i: int) -> None:
        mid = f"<incident-{kind}-{i}@sender.test>"
        self.record.message_ids.append(self.zm.send("alice@sender.test", [rcpt], subject="incident", message_id=mid))

    def _burst(self, datagrams: list[bytes]) -> None:
        """As fast as a busy ZoneMTA sends: far more than a 4 KiB buffer holds."""
        for d in datagrams:
            self._udp.sendto(d, ("127.0.0.1", self.remote_log))

    def _garbage(self) -> None:
        for d in garbage_remote_log(self.datagrams[0]):
            self._udp.sendto(d, ("127.0.0.1", self.remote_log))
        for d in garbage_gelf():
            self._udp.sendto(d, ("127.0.0.1", self.gelf))

    def _delete_held(self) -> None:
        """Delete the held domain's deferred deliveries, as an operator does from ZoneMTA's API."""
        listing = self.zm.api_json("/queued/deferred/default")["list"]
        for entry in listing:
            if not str(entry.get("recipient", "")).endswith("@" + HELD_DOMAIN):
                continue
            info = self.zm.api_json(f"/message/{entry['id']}")
            for delivery in info.get("messages", []):
                key = (entry["id"], delivery["seq"])
                if delivery.get("recipient") != entry["recipient"] or key in self.record.deleted:
                    continue
                req = urllib.request.Request(f"{self.zm.api_url}/message/{key[0]}/{key[1]}", method="DELETE")
                with urllib.request.urlopen(req, timeout=10) as resp:
                    assert json.loads(resp.read()).get("success"), entry
                self.record.deleted.append(key)


def _split(items: list, n: int) -> list[list]:
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


# The alerts these incidents must raise in both rule engines (pending: the run
# is shorter than their `for:`), by the label that says whose they are.
MUST_ALERT = [
    ("OtelMtaTelemetryDropped", {"instance": INCIDENT_POD}),       # kernel_overflow on the remote-log socket
    ("OtelMtaExportFailing", {"instance": INCIDENT_POD}),          # queue_full while the Collector was away
    ("OtelMtaRedisDown", {"instance": INCIDENT_POD}),              # the poller's Redis is not there
    ("OtelMtaSendingIpRefused", {"mta_sending_ip": LISTED_IP}),    # blacklist/block/policy refusals
]
