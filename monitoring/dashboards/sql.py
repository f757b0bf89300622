"""SQL for the ClickHouse profile, on the tables of the Collector's ClickHouse
exporter (docs/clickhouse.md), with the ClickHouse datasource's macros:
$__timeFilter(col), $__fromTime, $__toTime, $__timeInterval(col), $__interval_s.

Sums are cumulative there (the sidecar exports cumulative temporality, as OTLP
does by default): each row of otel_metrics_sum holds a running total since
StartTimeUnix. `counter_rate` turns them into per-interval increases the way
Prometheus' rate() does, without a cumulativetodelta step in the Collector:

1. per series (ResourceAttributes, Attributes) and run (StartTimeUnix: a
   restarted sidecar or target is a new run) the last total in each interval;
2. the difference to the run's previous interval (window function lagInFrame);
   a run's first interval counts from 0 when the run began inside the range
   (a new process), else it is the baseline (the lookback below provides it);
3. summed over the series by the chart's labels and divided by the interval.

Gauges and up-down counters are levels: the newest value per series and interval.
"""
from __future__ import annotations

from otel_mta import smtp_reply

ZONEMTA = "zonemta"      # service.name of ZoneMTA's telemetry (resource.zonemta_service_name)
SIDECAR = "otel-mta"     # service.name of the sidecar's own (OTEL_SERVICE_NAME)
LOOKBACK = "INTERVAL 10 MINUTE"   # > the metric export interval (60 s default): one point before the range
LOGS = "${database}.otel_logs"
TRACES = "${database}.otel_traces"
ZONE_FILTER = "LogAttributes['mta.zone'] IN (${zone:singlequote})"


def table(kind: str) -> str:
    return "${database}.otel_metrics_" + kind


def _labels(by: dict) -> tuple[str, str]:
    """(select list, group-by list) for {alias: expression}."""
    if not by:
        return "", ""
    return "".join(f", {expr} AS {alias}" for alias, expr in by.items()), "".join(f", {a}" for a in by)


def counter_rate(metric: str, by: dict, where: str = "", service: str | None = None,
                 per: str = "second", value: str | None = None) -> str:
    """Per-second rate (per="second") or increase per interval (per="interval")
    of a cumulative sum, as a long time series: time, the `by` labels, value.
    `by` maps an output column to an expression over Attributes (a) and
    ResourceAttributes (r) of the series."""
    sel, grp = _labels(by)
    cond = f" AND ServiceName = '{service}'" if service else ""
    cond += f" AND {where}" if where else ""
    value = value or ("sum(d) / $__interval_s" if per == "second" else "sum(d)")
    return f"""WITH points AS (
    SELECT $__timeInterval(TimeUnix) AS t, ResourceAttributes AS r, Attributes AS a, StartTimeUnix AS s,
           argMax(Value, TimeUnix) AS v
    FROM {table('sum')}
    WHERE MetricName = '{metric}'{cond}
      AND TimeUnix >= $__fromTime - {LOOKBACK} AND TimeUnix <= $__toTime
    GROUP BY t, r, a, s
), deltas AS (
    SELECT t, r, a,
           v - lagInFrame(v, 1, if(s >= $__fromTime, 0, v))
               OVER (PARTITION BY r, a, s ORDER BY t ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS d
    FROM points
)
SELECT t AS time{sel}, {value} AS value
FROM deltas
WHERE t >= $__fromTime
GROUP BY time{grp}
ORDER BY time{grp}"""


def counter_increase(metric: str, by: dict, where: str = "", service: str | None = None,
                     order: str = "value DESC", limit: int | None = None) -> str:
    """Increase of a cumulative sum over the whole range, by the `by` labels (a table)."""
    sel, grp = _labels(by)
    cond = f" AND ServiceName = '{service}'" if service else ""
    cond += f" AND {where}" if where else ""
    tail = f"\nLIMIT {limit}" if limit else ""
    return f"""WITH runs AS (
    SELECT ResourceAttributes AS r, Attributes AS a, StartTimeUnix AS s,
           argMax(Value, TimeUnix) - if(s >= $__fromTime, 0, argMin(Value, TimeUnix)) AS d
    FROM {table('sum')}
    WHERE MetricName = '{metric}'{cond}
      AND TimeUnix >= $__fromTime - {LOOKBACK} AND TimeUnix <= $__toTime
    GROUP BY r, a, s
)
SELECT {", ".join(f"{expr} AS {alias}" for alias, expr in by.items())}, sum(d) AS value
FROM runs
GROUP BY {", ".join(by)}
ORDER BY {order}{tail}"""


def level_series(metric: str | tuple, by: dict, where: str = "", kind: str = "gauge", agg: str = "sum",
                 service: str | None = None, value: str | None = None) -> str:
    """A gauge (or an up-down counter: kind="sum") over time: the newest value
    per series and interval, aggregated (`agg`) by the `by` labels, which may
    use the metric's name `m` when `metric` names several."""
    sel, grp = _labels(by)
    cond = f" AND ServiceName = '{service}'" if service else ""
    cond += f" AND {where}" if where else ""
    names = (metric,) if isinstance(metric, str) else metric
    match = " OR ".join(f"MetricName = '{n}'" for n in names)
    return f"""WITH points AS (
    SELECT $__timeInterval(TimeUnix) AS t, MetricName AS m, ResourceAttributes AS r, Attributes AS a,
           argMax(Value, TimeUnix) AS v
    FROM {table(kind)}
    WHERE ({match}){cond} AND $__timeFilter(TimeUnix)
    GROUP BY t, m, r, a
)
SELECT t AS time{sel}, {value or f"{agg}(v)"} AS value
FROM points
GROUP BY time{grp}
ORDER BY time{grp}"""


def level_now(metric: str, by: dict, where: str = "", kind: str = "gauge", agg: str = "sum",
              service: str | None = None, order: str = "value DESC", limit: int | None = None,
              name: str = "value") -> str:
    """The newest value of each series in the range, aggregated by the `by` labels (a table)."""
    cond = f" AND ServiceName = '{service}'" if service else ""
    cond += f" AND {where}" if where else ""
    tail = f"\nLIMIT {limit}" if limit else ""
    return f"""WITH latest AS (
    SELECT ResourceAttributes AS r, Attributes AS a, argMax(Value, TimeUnix) AS v, max(TimeUnix) AS seen
    FROM {table(kind)}
    WHERE MetricName = '{metric}'{cond} AND $__timeFilter(TimeUnix)
    GROUP BY r, a
)
SELECT {", ".join(f"{expr} AS {alias}" for alias, expr in by.items())}, {agg}(v) AS {name}
FROM latest
WHERE seen >= (SELECT max(seen) FROM latest) - INTERVAL 5 MINUTE
GROUP BY {", ".join(by)}
ORDER BY {order}{tail}"""


def reply_kind(column: str) -> str:
    """otel_mta.smtp_reply.normalise() in ClickHouse SQL (RE2; the same rules)."""
    expr = f"trimBoth({column})"
    for pattern, replacement in smtp_reply.RULES:
        expr = f"replaceRegexpAll({expr}, {_quote(pattern)}, {_quote(replacement)})"
    return f"substring(trimBoth({expr}), 1, {smtp_reply.MAX_LEN})"


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


PROGRAMS = ("zone-mta", "wildduck", "haraka", "mongod", "redis-server")
PROGRAM_RE = "(" + "|".join(PROGRAMS) + ")"


def program(resource: str = "r") -> str:
    """The mail-stack program a process belongs to, from its command (ZoneMTA's
    processes set titles such as `zone-mta: sender/default`)."""
    return f"extract({resource}['process.command'], '{PROGRAM_RE}')"
