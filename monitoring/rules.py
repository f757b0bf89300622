"""Alerting and recording rules for otel-mta, generated from monitoring/config.yaml.

    python -m monitoring            # writes monitoring/generated/ (make monitoring)

Built the monitoring-mixin way: one config (selectors, windows, thresholds with
their sources) -> Prometheus rule groups -> a committed YAML file that the tests
compare with a fresh generation, check with promtool, unit-test with
`promtool test rules` (monitoring/tests/) and run against a Prometheus filled
by the real pipeline (tests/monitoring/).

Recording rules are named level:metric:operations (Prometheus' naming
practice); the level names the labels kept, without their `mta_` prefix:
`zone` = mta_zone, `domain` = mta_recipient_domain, `sending_ip` =
mta_sending_ip, `outcome` = mta_delivery_outcome.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
OUTPUT = HERE / "generated" / "rules" / "otel-mta.rules.yaml"
RUNBOOKS = HERE.parent / "docs" / "runbooks.md"

# metric names as the Collector / Prometheus OTLP translation gives them
ATTEMPTS = "mta_delivery_attempts_total"
DURATION = "mta_delivery_duration_seconds_bucket"
QUEUE_SIZE = "mta_queue_size"
OLDEST_AGE = "mta_queue_oldest_age_seconds"
POLLER_UP = "otelmta_poller_up_ratio"
RSS = "otelmta_process_memory_rss_bytes"
DROPPED = "otelmta_receiver_dropped_records_total"
# the counters of items the exporter gave up on, per signal
SEND_FAILED = {"logs": "otelmta_exporter_send_failed_log_records_total",
               "spans": "otelmta_exporter_send_failed_spans_total",
               "metrics": "otelmta_exporter_send_failed_metric_points_total"}
EXPORT_QUEUE, EXPORT_CAPACITY = "otelmta_exporter_queue_size_bytes", "otelmta_exporter_queue_capacity_bytes"
SPOOL = "otelmta_exporter_spool_size_bytes"
REPL_LAG = "mongodb_replset_member_replication_lag_seconds"
MEMBER_HEALTH = "mongodb_replset_member_health_ratio"
REDIS_USED, REDIS_MAX, REDIS_EVICTED = "redis_memory_used_bytes", "redis_maxmemory_bytes", "redis_keys_evicted_total"

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _UniqueKeys(yaml.SafeLoader):
    """A YAML mapping may not name a key twice (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ValueError(f"{key_node.start_mark}: {key!r} appears twice")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_config(path: Path = CONFIG) -> dict:
    """monitoring/config.yaml, refusing a key given twice."""
    return yaml.load(path.read_text(), Loader=_UniqueKeys) or {}


def seconds(text) -> int:
    """Prometheus duration ("15m", "1h30m", "50h") -> seconds."""
    text = str(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


@dataclass(frozen=True)
class Config:
    raw: dict

    @classmethod
    def load(cls, path: Path = CONFIG) -> "Config":
        return cls(read_config(path))

    def alert(self, name: str) -> dict:
        return self.raw["alerts"][name]

    def selector(self, source: str, *matchers: str) -> str:
        """`{...}` joining the configured selector of a source with more
        matchers (a __name__ matcher first); "" when there is none."""
        parts = [p for p in (self.raw["selectors"][source], *matchers) if p]
        parts.sort(key=lambda p: not p.startswith("__name__"))
        return "{" + ", ".join(parts) + "}" if parts else ""

    def by(self, *labels: str) -> str:
        """The label list of an aggregation: the configured group_by first."""
        return ", ".join([*self.raw["group_by"], *labels])

    def agg(self, op: str, *labels: str) -> str:
        """`sum by (labels)`, or plain `sum` when there are no labels to keep."""
        kept = self.by(*labels)
        return f"{op} by ({kept})" if kept else op

    def on(self, *labels: str) -> str:
        """`on (labels)` for a binary operator, "" when there are none (all labels match)."""
        kept = self.by(*labels)
        return f" on ({kept})" if kept else ""

    def runbook(self, alert_name: str) -> str:
        return f"{self.raw['runbook_base_url']}#{alert_name.lower()}"

    @property
    def prefix(self) -> str:
        return self.raw["prefix"]


def M(label: str, op: str, value: str) -> str:
    """One label matcher, e.g. M("mta_queue_state", "=", "active") -> mta_queue_state="active"."""
    return f'{label}{op}"{value}"'


def _alternation(values) -> str:
    return "|".join(re.escape(v) for v in values)


def recording_rules(c: Config) -> list[dict]:
    """Rates and ratios the alerts and the dashboards share."""
    def rate(labels: tuple, window: str, *matchers: str) -> str:
        return f"{c.agg('sum', *labels)} (rate({ATTEMPTS}{c.selector('zonemta', *matchers)}[{window}]))"

    def ratio(part: str, whole: str) -> str:
        # `or 0 * whole`: a zone with no deferral at all has a ratio of 0, not none
        return f"({part}\n or 0 * {whole})\n/ {whole}"

    zone, domain, ip = ("mta_zone",), ("mta_recipient_domain",), ("mta_sending_ip",)
    zone_w = c.alert("ZoneDeferralRateHigh")["window"]
    dom_w = c.alert("DomainDeferralRateHigh")["window"]
    ip_w = c.alert("SendingIpRefused")["window"]
    bounce_w = c.alert("BounceRateHigh")["window"]
    lat_w = c.alert("DeliveryLatencyHigh")["window"]
    deferred = M("mta_delivery_outcome", "=", "deferred")
    has_domain = M("mta_recipient_domain", "!=", "")   # the overflow series has no domain
    refused = (M("mta_delivery_outcome", "=~", "deferred|rejected"),
               M("mta_bounce_category", "=~", _alternation(c.raw["refusal_categories"])))
    rules = [
        # dashboards: attempts by zone and outcome
        ("zone_outcome:mta_delivery_attempts:rate5m", rate(("mta_zone", "mta_delivery_outcome"), "5m")),
        (f"zone:mta_delivery_attempts:rate{zone_w}", rate(zone, zone_w)),
        (f"zone:mta_delivery_deferral:ratio_rate{zone_w}",
         ratio(rate(zone, zone_w, deferred), f"zone:mta_delivery_attempts:rate{zone_w}")),
        (f"domain:mta_delivery_attempts:rate{dom_w}", rate(domain, dom_w, has_domain)),
        (f"domain:mta_delivery_deferral:ratio_rate{dom_w}",
         ratio(rate(domain, dom_w, has_domain, deferred), f"domain:mta_delivery_attempts:rate{dom_w}")),
        (f"sending_ip:mta_delivery_attempts:rate{ip_w}", rate(ip, ip_w, M("mta_sending_ip", "!=", ""))),
        # refused: deferred or rejected because the receiver will not take mail from this IP
        (f"sending_ip:mta_delivery_refusal:ratio_rate{ip_w}",
         ratio(rate(ip, ip_w, *refused), f"sending_ip:mta_delivery_attempts:rate{ip_w}")),
        # final outcomes only: a deferral is neither a delivery nor a bounce
        (f"zone:mta_delivery_final:rate{bounce_w}",
         rate(zone, bounce_w, M("mta_delivery_outcome", "=~", "delivered|rejected"))),
        (f"zone:mta_delivery_bounce:ratio_rate{bounce_w}",
         ratio(rate(zone, bounce_w, M("mta_delivery_outcome", "=", "rejected")),
               f"zone:mta_delivery_final:rate{bounce_w}")),
        (f"zone:mta_delivery_duration_seconds:p95_rate{lat_w}",
         f"histogram_quantile(0.95, {c.agg('sum', 'mta_zone', 'le')} "
         f"(rate({DURATION}{c.selector('zonemta')}[{lat_w}])))"),
    ]
    return [{"record": name, "expr": expr} for name, expr in rules]


def _alert(c: Config, name: str, expr: str, summary: str, description: str, when: str,
           severity: str | None = None) -> dict:
    """One alerting rule. `when` says in words when it fires, for the table in
    docs/runbooks.md (kept under "_when", which render() leaves out)."""
    a = c.alert(name)
    full = c.prefix + name
    rule = {"alert": full, "expr": expr}
    if seconds(a["for"]):
        rule["for"] = a["for"]
    rule["labels"] = {"severity": severity or a["severity"]}
    rule["annotations"] = {"summary": summary, "description": description, "runbook_url": c.runbook(full)}
    rule["_when"] = when
    return rule


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def delivery_alerts(c: Config) -> list[dict]:
    z = lambda *m: c.selector("zonemta", *m)   # noqa: E731
    out = []

    a = c.alert("QueueStuck")
    t = a["threshold"]
    out.append(_alert(
        c, "QueueStuck",
        f"{c.agg('max', 'mta_zone')} ({OLDEST_AGE}{z(M('mta_queue_state', '=', 'active'))}) > {seconds(t)}",
        "Mail in zone {{ $labels.mta_zone }} has been due for over " + t + ".",
        "The oldest due delivery in ZoneMTA zone {{ $labels.mta_zone }} has waited {{ $value | humanizeDuration }} "
        f"(threshold {t}): the zone's senders are not keeping up or not taking mail.",
        when=f"oldest due delivery waiting > {t}"))

    a = c.alert("DeferredMailTooOld")
    t = a["threshold"]
    out.append(_alert(
        c, "DeferredMailTooOld",
        f"{c.agg('max', 'mta_zone')} ({OLDEST_AGE}{z(M('mta_queue_state', '=', 'deferred'))}) > {seconds(t)}",
        "Deferred mail in zone {{ $labels.mta_zone }} is older than ZoneMTA's retry schedule.",
        "The oldest deferred delivery in zone {{ $labels.mta_zone }} was queued {{ $value | humanizeDuration }} ago "
        f"(threshold {t}): past the last retry of the default schedule it should have bounced.",
        when=f"oldest deferred delivery queued > {t} ago"))

    a = c.alert("ZoneStalled")
    win = a["window"]
    out.append(_alert(
        c, "ZoneStalled",
        f"({c.agg('max', 'mta_zone')} ({QUEUE_SIZE}{z(M('mta_queue_state', '=', 'active'))}) > 0)\n"
        f"unless{c.on('mta_zone')}\n"
        f"({c.agg('sum', 'mta_zone')} (increase({ATTEMPTS}{z()}[{win}])) > 0)",
        "Zone {{ $labels.mta_zone }} has mail due but made no delivery attempt in " + win + ".",
        "ZoneMTA zone {{ $labels.mta_zone }} holds {{ $value }} due deliveries and has not attempted one in "
        f"{win}: its senders have stopped (ZoneMTA #347). Mail waits until the zone is restarted.",
        when=f"deliveries due in a zone and no attempt in it for {win}"))

    for name, level, label, summary, of in (
            ("ZoneDeferralRateHigh", "zone", "mta_zone",
             "Zone {{ $labels.mta_zone }} defers {{ $value | humanizePercentage }} of its delivery attempts.",
             "the delivery attempts in zone {{ $labels.mta_zone }}"),
            ("DomainDeferralRateHigh", "domain", "mta_recipient_domain",
             "{{ $labels.mta_recipient_domain }} defers {{ $value | humanizePercentage }} of the mail sent to it.",
             "the delivery attempts to {{ $labels.mta_recipient_domain }}")):
        a = c.alert(name)
        t, win, least = a["threshold"], a["window"], a["min_attempts"]
        only = ""
        if level == "domain":   # the top-N overflow bucket is many domains, not one
            only = "{" + M("mta_recipient_domain", "!~", _alternation(c.raw["domain_excluded"])) + "}"
        why = ("Across a whole zone this points at its sending IPs' reputation or the network rather than one "
               "receiver." if level == "zone" else
               "The provider is throttling (e.g. Gmail 421 4.7.28) or its servers are failing.")
        out.append(_alert(
            c, name,
            f"{level}:mta_delivery_deferral:ratio_rate{win}{only} > {t}\n"
            f"and{c.on(label)}\n"
            f"{level}:mta_delivery_attempts:rate{win} * {seconds(win)} >= {least}",
            summary,
            "{{ $value | humanizePercentage }} of " + of + f" were deferred over {win} "
            f"(threshold {_pct(t)}, at least {least} attempts). {why}",
            when=f"deferred > {_pct(t)} of a {level}'s attempts over {win} (≥ {least} attempts)"))

    a = c.alert("SendingIpRefused")
    t, win, least = a["threshold"], a["window"], a["min_attempts"]
    why = "/".join(c.raw["refusal_categories"])
    out.append(_alert(
        c, "SendingIpRefused",
        f"sending_ip:mta_delivery_refusal:ratio_rate{win} > {t}\n"
        f"and{c.on('mta_sending_ip')}\n"
        f"sending_ip:mta_delivery_attempts:rate{win} * {seconds(win)} >= {least}",
        "Receivers refuse mail from sending IP {{ $labels.mta_sending_ip }}.",
        "{{ $value | humanizePercentage }} of the attempts from {{ $labels.mta_sending_ip }} over " + win
        + f" were deferred or rejected as {why} (threshold {_pct(t)}, at least {least} attempts): the IP is "
        "likely on a blocklist or has a poor reputation with a large provider.",
        when=f"{why} refusals > {_pct(t)} of an IP's attempts over {win} (≥ {least} attempts)"))

    a = c.alert("BounceRateHigh")
    win, least = a["window"], a["min_attempts"]
    for sev, t in (("warning", a["threshold"]), ("critical", a["critical"])):
        out.append(_alert(
            c, "BounceRateHigh",
            f"zone:mta_delivery_bounce:ratio_rate{win} > {t}\n"
            f"and{c.on('mta_zone')}\n"
            f"zone:mta_delivery_final:rate{win} * {seconds(win)} >= {least}",
            "Zone {{ $labels.mta_zone }} bounces {{ $value | humanizePercentage }} of its mail.",
            "{{ $value | humanizePercentage }} of the final delivery outcomes in zone {{ $labels.mta_zone }} over "
            f"{win} were rejections (threshold {_pct(t)}, at least {least} outcomes). At 5% Amazon SES puts an "
            "account under review, at 10% it may pause it: receivers judge senders the same way.",
            when=f"rejected > {_pct(a['threshold'])} (warning), > {_pct(a['critical'])} (critical) of a zone's "
                 f"final outcomes over {win} (≥ {least})",
            severity=sev))

    a = c.alert("DeliveryLatencyHigh")
    t, win, least = a["threshold"], a["window"], a["min_attempts"]
    if win != c.alert("ZoneDeferralRateHigh")["window"]:
        raise ValueError("DeliveryLatencyHigh.window must equal ZoneDeferralRateHigh.window: they share "
                         "the zone:mta_delivery_attempts recording rule")
    out.append(_alert(
        c, "DeliveryLatencyHigh",
        f"zone:mta_delivery_duration_seconds:p95_rate{win} > {seconds(t)}\n"
        f"and{c.on('mta_zone')}\n"
        f"zone:mta_delivery_attempts:rate{win} * {seconds(win)} >= {least}",
        "Deliveries from zone {{ $labels.mta_zone }} are slow (p95 {{ $value | humanizeDuration }}).",
        "The 95th percentile of the SMTP transaction time in zone {{ $labels.mta_zone }} over " + win
        + " is {{ $value | humanizeDuration }} (threshold " + t + "): receivers are slow or tarpitting, or the "
        "network is, and the zone's senders get less done.",
        when=f"p95 of the SMTP transaction > {t} over {win} (≥ {least} attempts)"))

    a = c.alert("NoDeliveries")
    win = a["window"]
    out.append(_alert(
        c, "NoDeliveries",
        f"(\n  {c.agg('sum')} (increase({ATTEMPTS}{z()}[{win}]))\n"
        f"  or{c.on()} 0 * {c.agg('group')} ({RSS}{c.selector('sidecar')})\n) == 0",
        "No delivery attempt in " + win + ".",
        f"otel-mta has seen no ZoneMTA delivery attempt in {win} while the sidecar runs: nothing is being sent, "
        "or ZoneMTA's remote log no longer reaches the sidecar.",
        when=f"no delivery attempt in {win} while a sidecar reports"))
    return out


def dependency_alerts(c: Config) -> list[dict]:
    m = lambda *x: c.selector("mongodb", *x)   # noqa: E731
    r = lambda *x: c.selector("redis", *x)     # noqa: E731
    s = lambda *x: c.selector("sidecar", *x)   # noqa: E731
    out = []

    a = c.alert("MongodbReplicationLag")
    t = a["threshold"]
    out.append(_alert(
        c, "MongodbReplicationLag",
        f"{c.agg('max', 'mongodb_replset_name', 'mongodb_replset_member')} ({REPL_LAG}{m()}) > {seconds(t)}",
        "MongoDB member {{ $labels.mongodb_replset_member }} is {{ $value | humanizeDuration }} behind.",
        "Replica-set member {{ $labels.mongodb_replset_member }} of {{ $labels.mongodb_replset_name }} is "
        "{{ $value | humanizeDuration }} behind the primary (threshold " + t + "): a failover now would lose "
        "that much of ZoneMTA's queue.",
        when=f"a member > {t} behind the primary"))

    out.append(_alert(
        c, "MongodbPrimaryLost",
        f"{c.agg('count', 'mongodb_replset_name')} ({MEMBER_HEALTH}{m()})\n"
        f"unless{c.on('mongodb_replset_name')}\n"
        f"({c.agg('max', 'mongodb_replset_name')} "
        f"({MEMBER_HEALTH}{m(M('mongodb_replset_member_state', '=', 'PRIMARY'))}) == 1)",
        "MongoDB replica set {{ $labels.mongodb_replset_name }} has no healthy primary.",
        "No member of replica set {{ $labels.mongodb_replset_name }} is a healthy PRIMARY: ZoneMTA cannot "
        "queue, defer or complete deliveries until one is elected.",
        when="no healthy PRIMARY member in a replica set"))

    for name, poller, what in (("MongodbDown", "mongodb", "MongoDB"), ("RedisDown", "redis", "Redis"),
                               ("ZonemtaDown", "zonemta_api", "ZoneMTA's API")):
        out.append(_alert(
            c, name, f"{POLLER_UP}{s(M('poller', '=', poller))} == 0",
            what + " at {{ $labels.target }} does not answer.",
            "The sidecar {{ $labels.instance }} has failed to poll " + what + " at {{ $labels.target }} for "
            + c.alert(name)["for"] + " (its otelmta_poller_failures_total says why; so does `otel-mta check`).",
            when=f"the sidecar's poll of {what} fails"))

    a = c.alert("RedisMemoryNearLimit")
    t = a["threshold"]
    out.append(_alert(
        c, "RedisMemoryNearLimit",
        f"{REDIS_USED}{r()} / {REDIS_MAX}{r()} > {t}\nand {REDIS_MAX}{r()} > 0",
        "Redis uses {{ $value | humanizePercentage }} of its maxmemory.",
        "Redis has used {{ $value | humanizePercentage }} of maxmemory for " + a["for"] + " (threshold "
        + _pct(t) + "): at the limit it evicts keys or refuses writes, and ZoneMTA keeps its locks and "
        "counters there.",
        when=f"used memory > {_pct(t)} of maxmemory (when maxmemory is set)"))

    a = c.alert("RedisEvictingKeys")
    win = a["window"]
    out.append(_alert(
        c, "RedisEvictingKeys",
        f"increase({REDIS_EVICTED}{r()}[{win}]) > {a['threshold']}",
        "Redis evicted {{ $value | humanize }} keys in " + win + ".",
        "Redis evicted {{ $value | humanize }} keys in the last " + win + " because it reached maxmemory: "
        "ZoneMTA's locks and counters may be among them.",
        when=f"any key evicted in {win}"))

    out.append(_alert(
        c, "SidecarAbsent", f"absent({RSS}{s()})",
        "No otel-mta sidecar reports.",
        "No otel-mta sidecar has sent its own metrics for " + c.alert("SidecarAbsent")["for"] + " beyond "
        "Prometheus' lookback: ZoneMTA's telemetry is gone and every other otel-mta alert is blind.",
        when="no sidecar's own metrics at all"))

    a = c.alert("TelemetryDropped")
    t, win = a["threshold"], a["window"]
    out.append(_alert(
        c, "TelemetryDropped",
        f"{c.agg('sum', 'job', 'instance', 'receiver', 'reason')} "
        f"(rate({DROPPED}{s(M('reason', '!=', 'duplicate'))}[{win}])) > {t}",
        "otel-mta's {{ $labels.receiver }} receiver drops {{ $value | printf \"%.2f\" }} records/s.",
        "The sidecar {{ $labels.instance }} loses {{ $value | printf \"%.2f\" }} {{ $labels.receiver }} records per "
        f"second ({{{{ $labels.reason }}}}) before decoding them (threshold {t}/s): the metrics, logs and "
        "traces of those deliveries are missing.",
        when=f"> {t} records/s lost before decoding (duplicates excluded)"))

    a = c.alert("ExportFailing")
    t, win = a["threshold"], a["window"]
    # One rate per signal, told apart by a `signal` label so that `or` keeps
    # them all (rate() over several metric names would give series with the
    # same labels, an error), then added up.
    per_signal = "\n  or ".join(
        f'label_replace({c.agg("sum", "job", "instance", "exporter")} (rate({metric}{s()}[{win}])), '
        f'"signal", "{signal}", "", "")' for signal, metric in SEND_FAILED.items())
    out.append(_alert(
        c, "ExportFailing",
        f"{c.agg('sum', 'job', 'instance', 'exporter')} (\n  {per_signal}\n) > {t}",
        "otel-mta's {{ $labels.exporter }} exporter loses {{ $value | printf \"%.2f\" }} items/s.",
        "The sidecar {{ $labels.instance }} gives up on {{ $value | printf \"%.2f\" }} log records, spans or metric "
        f"points per second (threshold {t}/s): the Collector refuses them, or the export queue and spool are full.",
        when=f"> {t} items/s given up by the exporter"))

    a = c.alert("ExportBacklog")
    t = a["threshold"]
    out.append(_alert(
        c, "ExportBacklog",
        f"{EXPORT_QUEUE}{s()} / {EXPORT_CAPACITY}{s()} > {t}\n"
        # max by: without the metric name, so a sidecar with both is one alert
        f"or {c.agg('max', 'job', 'instance', 'exporter')} ({SPOOL}{s()} > 0)",
        "otel-mta's export to the Collector is backing up on {{ $labels.instance }}.",
        "The sidecar {{ $labels.instance }} has held undelivered telemetry for " + a["for"] + " (export queue "
        "over " + _pct(t) + " of its capacity, or requests spooled on disk): the Collector is unreachable or "
        "too slow. Nothing is lost yet; once the spool is full it will be.",
        when=f"export queue > {_pct(t)} of its capacity, or anything spooled on disk"))
    return out


def groups(c: Config) -> list[dict]:
    return [
        {"name": "otel-mta.rules", "rules": recording_rules(c)},
        {"name": "otel-mta.delivery", "rules": delivery_alerts(c)},
        {"name": "otel-mta.dependencies", "rules": dependency_alerts(c)},
    ]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = """\
# Generated by `python -m monitoring` (make monitoring) from monitoring/config.yaml
# by monitoring/rules.py. Do not edit: change the config or the generator and
# regenerate; tests/monitoring/test_rules.py fails when this file is stale.
"""


def render(c: Config | None = None) -> str:
    c = c or Config.load()
    public = [{**g, "rules": [{k: v for k, v in r.items() if not k.startswith("_")} for r in g["rules"]]}
              for g in groups(c)]
    body = yaml.dump({"groups": public}, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    return HEADER + body


def alert_table(c: Config | None = None) -> str:
    """The threshold table of docs/runbooks.md (between its markers)."""
    c = c or Config.load()
    lines = ["| alert | severity | fires when | for | where the threshold comes from |",
             "|---|---|---|---|---|"]
    seen = set()
    for group in groups(c)[1:]:
        for rule in group["rules"]:
            name = rule["alert"]
            short = name[len(c.prefix):]
            if short in seen:
                continue
            seen.add(short)
            a = c.alert(short)
            sev = "warning / critical" if "critical" in a and short == "BounceRateHigh" else a["severity"]
            lines.append(f"| [{name}](#{name.lower()}) | {sev} | {rule['_when']} | {a['for']} | "
                         f"{' '.join(a['source'].split())} |")
    return "\n".join(lines)


def generate(check: bool = False) -> list[Path]:
    """Write (or with check=True, compare) the rule file and runbooks' table;
    returns the paths that were stale."""
    c = Config.load()
    stale = []
    text = render(c)
    if not OUTPUT.exists() or OUTPUT.read_text() != text:
        stale.append(OUTPUT)
        if not check:
            OUTPUT.parent.mkdir(parents=True, exist_ok=True)
            OUTPUT.write_text(text)
    doc = RUNBOOKS.read_text()
    begin, end = "<!-- alert-table:begin (generated by python -m monitoring) -->", "<!-- alert-table:end -->"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        new = f"{head}{begin}\n{alert_table(c)}\n{end}{tail}"
        if new != doc:
            stale.append(RUNBOOKS)
            if not check:
                RUNBOOKS.write_text(new)
    else:
        raise ValueError(f"{RUNBOOKS} lacks the alert-table markers")
    return stale
