"""The parts every dashboard is made of, for both backend profiles.

A dashboard is a `Board` of rows of `Chart`s. A chart asks one question and
answers it once per profile:

    prometheus  Prometheus-compatible metrics (Prometheus, Mimir,
                VictoriaMetrics) under the names the Collector's OTLP ->
                Prometheus translation gives, with Loki (logs) and Tempo (traces)
    clickhouse  the tables of the Collector's ClickHouse exporter, through
                Grafana's ClickHouse datasource (grafana-clickhouse-datasource)

`build(board, profile)` turns it into a grafana-foundation-sdk dashboard:
datasource variables (never a datasource uid), panel ids numbered in order,
a uid per dashboard and profile, and every panel's description, which says
what it shows and what to do when it looks wrong (a chart without one cannot
be made).
"""
from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field

from grafana_foundation_sdk.builders import bargauge, dashboard as gd, heatmap, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import loki as loki_b
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as gcommon
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models import prometheus as prom_m

from monitoring.dashboards import clickhouse as ch

PROFILES = ("prometheus", "clickhouse")
TAGS = ["otel-mta", "mail"]

# Datasource variables: the panels name these, never a uid.
PROM_DS = gm.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI_DS = gm.DataSourceRef(type_val="loki", uid="${loki}")
TEMPO_DS = gm.DataSourceRef(type_val="tempo", uid="${tempo}")
CH_DS = gm.DataSourceRef(type_val=ch.PLUGIN_ID, uid="${datasource}")


# -- queries ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PromQL:
    expr: str
    legend: str = ""
    instant: bool = False     # one value per series at the end of the range (tables, bars)
    table: bool = False       # format=table (instant tables)
    heatmap: bool = False     # format=heatmap (le buckets)


@dataclass(frozen=True)
class LogQL:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class TraceQL:
    query: str


@dataclass(frozen=True)
class SQL:
    sql: str
    fmt: str = "table"        # table | time_series | logs | traces


Query = PromQL | LogQL | TraceQL | SQL


@dataclass
class Side:
    """One profile's answer to a chart's question."""
    queries: list
    transformations: list = field(default_factory=list)   # [(id, options)]
    links: dict = field(default_factory=dict)             # field name -> (title, url)


@dataclass
class Chart:
    title: str
    description: str      # what it shows, then what to do when it looks wrong
    viz: str              # timeseries | stacked | table | heatmap | bars
    prometheus: Side
    clickhouse: Side
    unit: str = "short"
    w: int = 12
    h: int = 8
    thresholds: list = field(default_factory=list)        # [(value, color)] above a green base
    max: float | None = None
    field_units: dict = field(default_factory=dict)       # column name -> unit (tables)

    def __post_init__(self):
        if len(self.description.split(". ")) < 2 or "." not in self.description:
            raise ValueError(f"{self.title}: the description must say what the panel shows and what to do")


@dataclass
class Row:
    title: str
    charts: list


@dataclass
class Variable:
    """A template variable with a query per profile (None: not on that profile)."""
    name: str
    label: str
    prometheus: str | None     # a Prometheus variable query, e.g. label_values(metric, label)
    clickhouse: str | None     # SQL whose first column gives the values
    multi: bool = True


@dataclass
class TextVariable:
    name: str
    label: str
    default: str = ""
    description: str = ""


@dataclass
class Board:
    slug: str             # file name and uid part: otel-mta-<slug>-<profile>
    title: str
    description: str
    rows: list
    variables: list = field(default_factory=list)
    loki: bool = False    # the Prometheus profile also reads Loki
    tempo: bool = False   # ... and Tempo
    time_from: str = "now-6h"

    def uid(self, profile: str) -> str:
        return f"otel-mta-{self.slug}-{'prom' if profile == 'prometheus' else 'ch'}"


# -- helpers for queries -----------------------------------------------------------------
def explore_url(pane: dict) -> str:
    """A link into Grafana Explore with one query; ${...} placeholders stay
    for Grafana to fill (the data link's value, the datasource variables)."""
    panes = json.dumps({"trace": {**pane, "range": {"from": "${__from}", "to": "${__to}"}}},
                       separators=(",", ":"), sort_keys=True)
    encoded = urllib.parse.quote(panes, safe="")
    for placeholder in ("${__value.raw}", "${datasource}", "${tempo}", "${loki}", "${database}",
                        "${__from}", "${__to}"):
        encoded = encoded.replace(urllib.parse.quote(placeholder, safe=""), placeholder)
    return "/explore?schemaVersion=1&orgId=1&panes=" + encoded


# -- building ----------------------------------------------------------------------------
def _target(q: Query, ref: str):
    if isinstance(q, PromQL):
        t = prom_b.Dataquery().expr(q.expr).ref_id(ref).datasource(PROM_DS).legend_format(q.legend or "__auto")
        if q.instant:
            t = t.instant()
        else:
            t = t.range()
        if q.table:
            t = t.format(prom_m.PromQueryFormat.TABLE)
        elif q.heatmap:
            t = t.format(prom_m.PromQueryFormat.HEATMAP)
        return t
    if isinstance(q, LogQL):
        t = loki_b.Dataquery().expr(q.expr).ref_id(ref).datasource(LOKI_DS)
        if q.legend:
            t = t.legend_format(q.legend)
        return t.instant(True) if q.instant else t.range(True)
    if isinstance(q, TraceQL):
        return ch.RawQuery({"datasource": TEMPO_DS.to_json(), "refId": ref, "queryType": "traceql",
                            "query": q.query, "limit": 20, "tableType": "traces"})
    if isinstance(q, SQL):
        return ch.Query(q.sql, ch.FORMATS[q.fmt], ref)
    raise TypeError(q)


VIZ = {"timeseries": timeseries.Panel, "stacked": timeseries.Panel, "table": table.Panel,
       "heatmap": heatmap.Panel, "bars": bargauge.Panel}


def _panel(chart: Chart, profile: str, pid: int, x: int, y: int):
    side: Side = getattr(chart, profile)
    viz = chart.viz
    ds = CH_DS if profile == "clickhouse" else (
        LOKI_DS if side.queries and isinstance(side.queries[0], LogQL) else
        TEMPO_DS if side.queries and isinstance(side.queries[0], TraceQL) else PROM_DS)
    p = (VIZ[viz]().id(pid).title(chart.title).description(chart.description).datasource(ds)
         .grid_pos(gm.GridPos(h=chart.h, w=chart.w, x=x, y=y)))
    for i, q in enumerate(side.queries):
        p = p.with_target(_target(q, chr(ord("A") + i)))
    p = p.unit(chart.unit)
    steps = [gm.Threshold(value=None, color="green")] + [gm.Threshold(value=v, color=c)
                                                         for v, c in chart.thresholds]
    p = p.thresholds(gd.ThresholdsConfig().mode(gm.ThresholdsMode.ABSOLUTE).steps(steps))
    if chart.max is not None:
        p = p.max(chart.max)
    if viz == "stacked":
        p = p.stacking(_stacking()).fill_opacity(30)
    if viz in ("timeseries", "stacked") and chart.thresholds:
        p = p.thresholds_style(_threshold_lines())
    if viz == "heatmap":
        p = p.calculate(profile == "clickhouse")   # Prometheus buckets come ready; raw durations get bucketed
    if viz == "bars":
        # every row of a table (ClickHouse) or every series (Prometheus) is a bar
        p = (p.orientation(gcommon.VizOrientation.HORIZONTAL).display_mode(gcommon.BarGaugeDisplayMode.GRADIENT)
             .reduce_options(cb.ReduceDataOptions().values(profile == "clickhouse").calcs(["lastNotNull"])))
    if viz == "table":
        p = p.filterable(True)
    for tid, options in side.transformations:
        p = p.with_transformation(gm.DataTransformerConfig(id_val=tid, options=options))
    for field_name, unit in sorted(chart.field_units.items()):
        p = p.override_by_name(field_name, [gm.DynamicConfigValue(id_val="unit", value=unit)])
    for field_name, (title, url) in sorted(side.links.items()):
        p = p.override_by_name(field_name, [gm.DynamicConfigValue(
            id_val="links", value=[{"title": title, "url": url, "targetBlank": False}])])
    return p


def _stacking():
    return cb.StackingConfig().mode(gcommon.StackingMode.NORMAL)


def _threshold_lines():
    return cb.GraphThresholdsStyleConfig().mode(gcommon.GraphThresholdsStyleMode.LINE)


def _variables(board: Board, profile: str) -> list:
    out = []
    if profile == "prometheus":
        out.append(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        if board.loki:
            out.append(gd.DatasourceVariable("loki").label("Loki").type("loki"))
        if board.tempo:
            out.append(gd.DatasourceVariable("tempo").label("Tempo").type("tempo"))
    else:
        out.append(gd.DatasourceVariable("datasource").label("ClickHouse").type(ch.PLUGIN_ID))
        out.append(_textbox("database", "Database", "otel")
                   .description("The database the Collector's ClickHouse exporter writes to (its `database`)."))
    for v in board.variables:
        if isinstance(v, TextVariable):
            out.append(_textbox(v.name, v.label, v.default).description(v.description))
            continue
        query = getattr(v, profile)
        if query is None:
            continue
        var = (gd.QueryVariable(v.name).label(v.label).multi(v.multi).include_all(v.multi)
               .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(gm.VariableSort.ALPHABETICAL_ASC))
        if profile == "prometheus":
            var = var.datasource(PROM_DS).query(query)
            if v.multi:
                var = var.all_value(".*")
        else:
            var = var.datasource(CH_DS).query({"editorType": "sql", "rawSql": query})
        out.append(var)
    return out


def _textbox(name: str, label: str, default: str) -> gd.TextBoxVariable:
    return (gd.TextBoxVariable(name).label(label).default_value(default)
            .current(gm.VariableOption(selected=True, text=default, value=default)))


def build(board: Board, profile: str) -> gd.Dashboard:
    d = (gd.Dashboard(board.title).uid(board.uid(profile)).description(board.description)
         .tags(TAGS + [profile]).time(board.time_from, "now").refresh("1m").timezone("browser")
         .tooltip(gm.DashboardCursorSync.CROSSHAIR).editable())
    for var in _variables(board, profile):
        d = d.with_variable(var)
    d = d.link(gd.DashboardLink("otel-mta dashboards").type(gm.DashboardLinkType.DASHBOARDS)
               .tags(["otel-mta", profile]).as_dropdown(True).include_vars(True).keep_time(True))
    pid, y = 1, 0
    for row in board.rows:
        d = d.with_row(gd.Row(row.title).id(pid).grid_pos(gm.GridPos(h=1, w=24, x=0, y=y)))
        pid += 1
        y += 1
        x, row_h = 0, 0
        for chart in row.charts:
            if x + chart.w > 24:
                x, y, row_h = 0, y + row_h, 0
            d = d.with_panel(_panel(chart, profile, pid, x, y))
            pid += 1
            x += chart.w
            row_h = max(row_h, chart.h)
        y += row_h
    return d


def to_json(d: gd.Dashboard) -> str:
    return json.dumps(d.build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def from_json(text: str) -> gm.Dashboard:
    """The SDK's model of a dashboard JSON (what the round-trip test loads)."""
    cogruntime.register_dataquery_variant(ch.variant_config())
    return gm.Dashboard.from_json(json.loads(text))


def charts(board: Board):
    for row in board.rows:
        yield from row.charts

