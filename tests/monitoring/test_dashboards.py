"""The generated dashboards (monitoring/dashboards/, docs/dashboards.md).

- The committed JSON is what the generator makes (the mixins' `git diff --exit-code`).
- It loads into grafana-foundation-sdk's models and back unchanged, and holds
  together: unique panel ids and uids, datasource variables only, a
  description on every panel, the same questions on both profiles.
- Every PromQL expression of every panel, and every variable's query, runs
  against the real Prometheus and the real VictoriaMetrics of `pipeline_run`
  (the sidecars' real output through the real Collector: remote write to
  Prometheus, OTLP to VictoriaMetrics) and returns data; every metric, label
  and label value each of its selectors names matches series there. The run's
  incidents (tests/monitoring/incidents.py) fill the panels that only fill
  when something fails: refused and dropped records, export failures, the
  spool, poller failures, dropped and deleted deliveries, a refused sending IP.
- Every ClickHouse panel's SQL runs in chdb on the Collector ClickHouse
  exporter's tables filled with the same run's OTLP, after Grafana's variables
  and the ClickHouse datasource's macros are expanded as they are in Grafana,
  and returns rows.
- LogQL (Loki) and TraceQL (Tempo) cannot run here (AGPL, not installed): they
  are checked for balanced syntax and for naming only attributes the pipeline
  sends.
"""
from __future__ import annotations

import json
import re
import urllib.parse
from functools import lru_cache

import pytest

from monitoring import dashboards
from monitoring.dashboards import common
from otel_mta import catalog, smtp_reply
from tests.backends.servers import http_get_json

GENERATED = dashboards.OUT
BOARDS = {b.slug: b for b in dashboards.BOARDS}
CH_PLUGIN = "grafana-clickhouse-datasource"
RATE_INTERVAL, RANGE = "2m", "15m"     # what Grafana would pick for a ~15 minute view of the run
CH_INTERVAL_S = 10
BACKENDS = ("prometheus", "victoriametrics")   # the Prometheus profile's datasource, either


def _load(profile: str, slug: str) -> dict:
    return json.loads((GENERATED / profile / f"{slug}.json").read_text())


def _panels(doc: dict):
    for p in doc["panels"]:
        yield p
        yield from p.get("panels", [])


def _targets(profile: str, kind: str):
    """(id, slug, panel, target) for every target of `kind` (its datasource type)."""
    out = []
    for slug in BOARDS:
        for panel in _panels(_load(profile, slug)):
            for t in panel.get("targets", []):
                if t["datasource"]["type"] == kind:
                    out.append(pytest.param(slug, panel, t, id=f"{slug}:{panel['id']}{t['refId']}:{panel['title']}"))
    return out


# -- the committed output and its structure ----------------------------------------------
def test_generated_dashboards_are_committed():
    """Run `make monitoring` and commit when this fails."""
    rendered = dashboards.render()
    on_disk = {p.relative_to(GENERATED): p.read_text() for p in GENERATED.rglob("*.json")}
    assert set(on_disk) == set(rendered), "extra or missing files: run `make monitoring`"
    stale = [str(p) for p, text in rendered.items() if on_disk[p] != text]
    assert not stale, f"out of date (run `make monitoring`): {stale}"


@pytest.mark.parametrize("profile", common.PROFILES)
@pytest.mark.parametrize("slug", list(BOARDS))
def test_round_trips_through_the_sdk_models(profile, slug):
    text = (GENERATED / profile / f"{slug}.json").read_text()
    model = common.from_json(text)
    again = json.loads(json.dumps(model.to_json(), cls=common.JSONEncoder))
    assert again == json.loads(text)


@pytest.mark.parametrize("profile", common.PROFILES)
@pytest.mark.parametrize("slug", list(BOARDS))
def test_structure(profile, slug):
    doc = _load(profile, slug)
    assert doc["uid"] == f"otel-mta-{slug}-{'prom' if profile == 'prometheus' else 'ch'}" and len(doc["uid"]) <= 40
    ids = [p["id"] for p in _panels(doc)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    ds_vars = {v["name"]: v["query"] for v in doc["templating"]["list"] if v["type"] == "datasource"}
    assert "datasource" in ds_vars
    all_vars = {v["name"] for v in doc["templating"]["list"]}
    refs = []
    for panel in _panels(doc):
        if panel["type"] == "row":
            continue
        d = panel.get("description", "")
        assert len(d) > 80 and d.count(". ") >= 1, f"{panel['title']}: description must say what and what to do"
        refs.append(panel["datasource"])
        refs += [t["datasource"] for t in panel["targets"]]
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
    for v in doc["templating"]["list"]:
        if "datasource" in v:
            refs.append(v["datasource"])
    for ref in refs:                      # never a datasource uid, always a variable of the right type
        m = re.fullmatch(r"\$\{(\w+)\}", ref["uid"])
        assert m and m.group(1) in ds_vars, ref
        assert ds_vars[m.group(1)] == ref["type"], ref
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(doc)))
    builtin = {"__rate_interval", "__range", "__interval", "__interval_s", "__timeFilter", "__fromTime",
               "__toTime", "__timeInterval", "__value", "__from", "__to", "1"}
    assert used - builtin <= all_vars, used - builtin - all_vars
    _no_overlap(doc)


def _no_overlap(doc: dict) -> None:
    cells = set()
    for p in _panels(doc):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_uids_are_unique_and_both_profiles_ask_the_same_questions():
    uids = [_load(p, s)["uid"] for p in common.PROFILES for s in BOARDS]
    assert len(uids) == len(set(uids))
    for slug in BOARDS:
        titles = [[(p["id"], p["title"], p.get("description")) for p in _panels(_load(profile, slug))]
                  for profile in common.PROFILES]
        assert titles[0] == titles[1]


def test_every_chart_must_say_what_to_do():
    with pytest.raises(ValueError, match="what the panel shows and what to do"):
        common.Chart("x", "Shows x", "timeseries", common.Side([]), common.Side([]))


# -- Prometheus ----------------------------------------------------------------------------
def _fmt(value, fmt: str | None, prom: bool) -> str:
    values = value if isinstance(value, list) else [value]
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt is None and prom:
        # the Prometheus (and Loki) datasource's interpolateQueryExpr: a list
        # variable's values are regex-escaped for a PromQL string, a text box's
        # only have their backslashes doubled
        if not isinstance(value, list):
            return value.replace("\\", "\\\\")
        escaped = [re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), v.replace("\\", "\\\\\\\\"))
                   for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    assert fmt is None, f"format {fmt} not known to this test"
    return ",".join(values)


def interpolate(text: str, values: dict, prom: bool = False) -> str:
    """Grafana's variable interpolation: $name, ${name}, ${name:format}; "All"
    of a list variable is its allValue (.*) on Prometheus, every value in SQL."""
    def sub(m):
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if name not in values:
            return m.group(0)
        v = values[name]
        if v == "$__all":
            return ".*"
        return _fmt(v, fmt, prom)
    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", sub, text)


PROM_BUILTINS = {"__rate_interval": RATE_INTERVAL, "__range": RANGE, "__interval": "15s"}


def promql(expr: str, variables: dict) -> str:
    out = interpolate(expr, {**PROM_BUILTINS, **variables}, prom=True)
    assert "$" not in out.replace("$1", ""), f"uninterpolated variable in {out}"
    return out


@lru_cache(maxsize=None)
def prom_names(base: str) -> frozenset:
    return frozenset(http_get_json(f"{base}/api/v1/label/__name__/values")["data"])


@lru_cache(maxsize=None)
def prom_labels(base: str, metric: str) -> frozenset:
    q = urllib.parse.urlencode({"match[]": metric})
    return frozenset(http_get_json(f"{base}/api/v1/labels?{q}")["data"])


def catalog_prometheus_names() -> dict:
    """{Prometheus name: catalog metric} as the Collector's translation names them."""
    units = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "By": "bytes", "1": "ratio"}
    out = {}
    for m in catalog.load().metrics.values():
        base = m.name.replace(".", "_")
        unit = m.unit
        suffix = units.get(unit) or ("per_second" if unit.endswith("/s") else "")
        if unit == "1" and m.type != "gauge":
            suffix = ""
        if suffix and not base.endswith("_" + suffix):
            base += "_" + suffix
        if m.type == "counter":
            out[base + "_total"] = m
        elif m.type == "histogram":
            for s in ("_bucket", "_sum", "_count"):
                out[base + s] = m
        else:
            out[base] = m
    return out


def selectors(base: str, expr: str) -> list:
    """(metric names, label names used with them, the selector alone) per vector
    selector, and the labels an expression groups, matches or reads
    (label_replace), from Prometheus' own parser."""
    ast = http_get_json(f"{base}/api/v1/parse_query?{urllib.parse.urlencode({'query': expr})}")["data"]
    found, labels = [], set()

    def walk(node):
        if isinstance(node, list):
            for n in node:
                walk(n)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind in ("vectorSelector", "matrixSelector"):
            names, used = set(), set()
            for m in node.get("matchers", []):
                if m["name"] == "__name__":
                    rx = re.compile(m["value"]) if m["type"] in ("=~", "!~") else None
                    names |= {n for n in catalog_prometheus_names() if (rx.fullmatch(n) if rx else n == m["value"])}
                else:
                    used.add(m["name"])
            if node.get("name"):
                names.add(node["name"])
            text = "{" + ", ".join(f'{m["name"]}{m["type"]}{json.dumps(m["value"])}'
                                   for m in node.get("matchers", [])) + "}"
            found.append((names, used, text))
        if kind == "aggregation":
            labels.update(node.get("grouping") or [])
        if kind == "binaryExpr" and node.get("matching"):
            labels.update(node["matching"].get("labels") or [])
            labels.update(node["matching"].get("include") or [])
        if kind == "call" and node.get("func", {}).get("name") == "label_replace":
            labels.add(node["args"][3]["val"])
        for v in node.values():
            if isinstance(v, (dict, list)):
                walk(v)
    walk(ast)
    return found, labels


def check_names(run, backend: str, expr: str) -> None:
    """Every metric the expression names is a catalog metric (as the translation
    names it) stored in the backend, every label it uses is on it, and every
    selector, label values included, matches series: a misspelt value in a
    matcher fails too, even under `or vector(0)`."""
    base = run.backend(backend).base
    known = catalog_prometheus_names()
    names_in_run = prom_names(base)
    found, grouped = selectors(run.prometheus.base, expr)
    assert found, f"no metric in {expr}"
    all_labels = set()
    for names, used, text in found:
        assert names, f"a selector matching no metric in {expr}"
        for name in names:
            assert name in known, f"{name} is not a catalog metric as Prometheus names it"
            assert name in names_in_run, f"{name} never reached {backend} in the pipeline run"
            labels = prom_labels(base, name)
            assert used <= labels, f"{name}: labels {sorted(used - labels)} not on it ({sorted(labels)})"
            all_labels |= labels
        assert run.backend(backend).query(f"count({text})", run.eval_time), f"{text} matches no series on {backend}"
    made = set(re.findall(r'label_replace\([^"]*"(\w+)"', expr))
    assert grouped <= all_labels | made, f"grouping by labels no metric has: {sorted(grouped - all_labels - made)}"


def variable_values(run, doc: dict, backend: str = "prometheus") -> dict:
    """Each query variable's values from its own query (label_values) in the run."""
    out = {}
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", v["query"])
            assert m, v["query"]
            rows = run.backend(backend).query(f"group by ({m.group(2)}) ({m.group(1)})", run.eval_time)
            out[v["name"]] = sorted(r["metric"][m.group(2)] for r in rows if m.group(2) in r["metric"])
        elif v["type"] == "textbox":
            out[v["name"]] = ""
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("slug", [s for s in BOARDS])
def test_prometheus_variables_have_values(pipeline_run, slug, backend):
    doc = _load("prometheus", slug)
    for name, values in variable_values(pipeline_run, doc, backend).items():
        kind = next(v["type"] for v in doc["templating"]["list"] if v["name"] == name)
        assert kind == "textbox" or values, f"variable {name} has no values in the run on {backend}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("slug, panel, target", _targets("prometheus", "prometheus"))
def test_promql_returns_data(pipeline_run, slug, panel, target, backend):
    doc = _load("prometheus", slug)
    values = variable_values(pipeline_run, doc, backend)
    everything = {k: ("$__all" if isinstance(v, list) else v) for k, v in values.items()}
    expr = promql(target["expr"], everything)
    check_names(pipeline_run, backend, expr)
    engine = pipeline_run.backend(backend)

    def query(e):
        return engine.query(e, pipeline_run.eval_time)
    assert query(expr), f"no data for {expr} on {backend}"
    # one real value of each list variable must select data too: a misspelt
    # label matches everything with ".*" (All) but nothing with a value
    for name, options in values.items():
        if isinstance(options, list) and re.search(rf"\$\{{?{name}\b", target["expr"]):
            assert any(query(promql(target["expr"], {**everything, name: [o]})) for o in options), \
                f"no value of ${name} selects data in {target['expr']} on {backend}"
    if re.search(r"\$domain\b", target["expr"]):      # the explorer's text box, with a real domain
        domain = sorted(r["metric"]["mta_recipient_domain"] for r in query(
            "group by (mta_recipient_domain) (mta_delivery_attempts_total)"))[0]
        assert query(promql(target["expr"], {**everything, "domain": domain})), expr


@pytest.mark.parametrize("backend", BACKENDS)
def test_catalog_names_translate_to_what_the_backend_stores(pipeline_run, backend):
    """The translation the name checks rely on matches the real Collector's
    (remote write to Prometheus) and VictoriaMetrics' (OTLP with
    -opentelemetry.usePrometheusNaming). Not from the pipeline: target_info
    (Prometheus' resource series), the rules' recorded series
    (level:metric:operations, the only names with a colon) and the rule
    engines' ALERTS series."""
    known = catalog_prometheus_names()
    stored = {n for n in prom_names(pipeline_run.backend(backend).base)
              if n not in ("target_info", "ALERTS", "ALERTS_FOR_STATE") and ":" not in n}
    assert stored <= set(known), sorted(stored - set(known))


# -- Loki and Tempo: shape and names only --------------------------------------------------
def _balanced(text: str) -> bool:
    pairs, stack, quote = {")": "(", "]": "[", "}": "{"}, [], None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"`":
            quote = c
        elif c in "([{":
            stack.append(c)
        elif c in ")]}":
            if not stack or stack.pop() != pairs[c]:
                return False
        i += 1
    return not stack and quote is None


def _attributes(signal: str) -> set:
    return {name for name, a in catalog.load().attributes.items() if signal in a.signals}


LOKI_LABELS = {a.replace(".", "_") for a in _attributes("logs")} | {"trace_id", "span_id", "severity_text"}


def _records(run, signal: str):
    """(resource attributes, record attributes) of every log record / span of the run."""
    from tests.collector.clickhouse_schema import attrs
    key, scopes, items = {"logs": ("resourceLogs", "scopeLogs", "logRecords"),
                          "traces": ("resourceSpans", "scopeSpans", "spans")}[signal]
    for req in run.otlp[signal]:
        for r in req.get(key, []):
            res = attrs(r.get("resource", {}))
            for sc in r.get(scopes, []):
                for item in sc.get(items, []):
                    yield res, attrs(item)


@pytest.mark.parametrize("slug, panel, target", _targets("prometheus", "loki"))
def test_logql_names_only_what_the_pipeline_sends(pipeline_run, slug, panel, target):
    expr = target["expr"]
    assert _balanced(expr), expr
    stream = re.findall(r"\{(\w+)=\"([^\"]*)\"\}", expr)
    assert stream == [("service_name", "zonemta")], stream     # the sidecar's ZoneMTA resource
    filters = set(re.findall(r"\|\s*(\w+)\s*(?:=~|!~|!=|=)", expr))
    assert filters and filters <= LOKI_LABELS, filters - LOKI_LABELS
    template_fields = set(re.findall(r"\.(\w+)", "".join(re.findall(r"`([^`]*)`", expr))))
    assert template_fields <= LOKI_LABELS, template_fields - LOKI_LABELS
    assert re.sub(r"\$\{?\w+(:\w+)?\}?", "", expr).count("$") == 0
    # and the run's ZoneMTA records carry every one of them together (Loki's
    # label filters drop records without the label unless it may be empty)
    names = {a for a in _attributes("logs") if a.replace(".", "_") in filters | template_fields}
    assert any(res.get("service.name") == "zonemta" and names <= set(rec)
               for res, rec in _records(pipeline_run, "logs")), names


@pytest.mark.parametrize("slug, panel, target", _targets("prometheus", "tempo"))
def test_traceql_names_only_span_attributes(pipeline_run, slug, panel, target):
    query = target["query"]
    assert _balanced(query) and query.startswith("{") and query.endswith("}")
    used = set(re.findall(r"span\.([\w.]+)", query))
    assert used and used <= _attributes("spans"), used - _attributes("spans")
    # one spanset `{ a && b && c }` needs one span with all of them: the run has such spans
    assert any(used <= set(rec) for _, rec in _records(pipeline_run, "traces")), used


def test_loki_reply_template_applies_the_same_rules():
    from monitoring.dashboards import logql
    template = logql.reply_kind()
    for pattern, replacement in smtp_reply.RULES:
        go = '"' + pattern.replace("\\", "\\\\") + '"'
        assert go in template
    assert template.count("regexReplaceAll") == len(smtp_reply.RULES)


# -- ClickHouse ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chdb_run(pipeline_run, tmp_path_factory):
    """chdb with the exporter's tables, filled with the run's OTLP as the exporter maps it."""
    from chdb import session as chs_session

    from tests.collector import clickhouse_schema as chs
    sess = chs_session.Session(str(tmp_path_factory.mktemp("chdb-dashboards")))
    version = sess.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')
    major, minor = (int(x) for x in version.split(".")[:2])
    for stmt in chs.create_statements(full_text_search=(major, minor) >= (26, 2)):
        sess.query(stmt)
    tables = {"otel_logs": chs.log_rows(pipeline_run.otlp["logs"]),
              "otel_traces": chs.span_rows(pipeline_run.otlp["traces"])}
    for kind, rows in chs.metric_rows(pipeline_run.otlp["metrics"]).items():
        tables[f"otel_metrics_{kind}"] = rows
    for table, rows in tables.items():
        assert rows, f"no rows for {table}"
        for i in range(0, len(rows), 2000):
            body = "\n".join(json.dumps(r) for r in rows[i:i + 2000])
            sess.query(f"INSERT INTO otel.{table} FORMAT JSONEachRow {body}")
    yield sess
    sess.close()


def _args(sql: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of a macro call whose "(" is at `start`."""
    depth, args, cur, i = 0, [], "", start
    while i < len(sql):
        c = sql[i]
        if c == "(":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(cur.strip())
                return args, i + 1
        elif c == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
            i += 1
            continue
        cur += c
        i += 1
    raise AssertionError(f"unbalanced macro call in {sql[start:start + 80]}")


def expand_macros(sql: str, frm: int, to: int, interval_s: int) -> str:
    """The ClickHouse datasource's macros as its pkg/macros/macros.go expands
    them (the same output in v4.0 through v4.20)."""
    def dt(t):
        return f"toDateTime({t})"
    out, i = "", 0
    for m in re.finditer(r"\$__(\w+)", sql):
        if m.start() < i:
            continue
        out += sql[i:m.start()]
        name, end = m.group(1), m.end()
        if name in ("timeFilter", "timeInterval"):
            args, end = _args(sql, m.end())
            assert len(args) == 1, args
            if name == "timeFilter":
                out += f"{args[0]} >= {dt(frm)} AND {args[0]} <= {dt(to)}"
            else:
                out += f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {interval_s} second)"
        elif name == "fromTime":
            out += dt(frm)
        elif name == "toTime":
            out += dt(to)
        elif name == "interval_s":
            out += str(interval_s)
        else:
            raise AssertionError(f"macro $__{name} is not expanded by this test: add it as the plugin does")
        i = end
    return out + sql[i:]


def ch_query(sess, sql: str) -> list[dict]:
    text = sess.query(sql, "JSONEachRow").bytes().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ch_sql(run, raw: str, values: dict) -> str:
    frm, to = int(run.eval_time) - 1800, int(run.eval_time) + 60
    sql = expand_macros(interpolate(raw, {"database": "otel", **values}), frm, to, CH_INTERVAL_S)
    assert not re.search(r"\$(\{|\w)", sql), f"not expanded: {sql}"
    return sql


def ch_variable_values(run, sess, doc: dict) -> dict:
    out = {}
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            rows = ch_query(sess, ch_sql(run, v["query"]["rawSql"], {}))
            out[v["name"]] = sorted(str(next(iter(r.values()))) for r in rows)
        elif v["type"] == "textbox" and v["name"] != "database":
            out[v["name"]] = ""
    return out


@pytest.mark.parametrize("slug", list(BOARDS))
def test_clickhouse_variables_have_values(pipeline_run, chdb_run, slug):
    for name, values in ch_variable_values(pipeline_run, chdb_run, _load("clickhouse", slug)).items():
        assert values != [], f"variable {name} has no values"


@pytest.mark.parametrize("slug, panel, target", _targets("clickhouse", CH_PLUGIN))
def test_clickhouse_sql_returns_rows(pipeline_run, chdb_run, slug, panel, target):
    values = ch_variable_values(pipeline_run, chdb_run, _load("clickhouse", slug))
    check_sql_names(pipeline_run, target["rawSql"])
    rows = ch_query(chdb_run, ch_sql(pipeline_run, target["rawSql"], values))
    assert rows, f"no rows for {target['rawSql']}"
    if target["format"] == 0:     # time series: a time column the datasource can use
        assert "time" in rows[0], rows[0]


def check_sql_names(run, sql: str) -> None:
    """Every metric the SQL names is a catalog metric; every attribute key it
    reads is one the catalog declares for that signal (resource keys: ones the
    run's resources carry)."""
    c = catalog.load()
    metrics = set(re.findall(r"MetricName = '([^']+)'", sql)) | set(re.findall(r"m = '([^']+)'", sql))
    assert metrics <= set(c.metrics), metrics - set(c.metrics)
    for column, signal in (("LogAttributes", "logs"), ("SpanAttributes", "spans"),
                           (r"(?:\ba|\bAttributes)", "metrics")):
        keys = set(re.findall(column + r"\['([^']+)'\]", sql))
        assert keys <= _attributes(signal), (signal, keys - _attributes(signal))
    resource_keys = set().union(*(set(res) for signal in ("logs", "traces") for res, _ in _records(run, signal)),
                                *(set(r["ResourceAttributes"]) for r in _metric_rows(run)))
    keys = set(re.findall(r"(?:\br|ResourceAttributes)\['([^']+)'\]", sql))
    assert keys <= resource_keys, keys - resource_keys


def _metric_rows(run) -> list:
    from tests.collector import clickhouse_schema as chs
    if not hasattr(run, "_metric_rows"):
        rows = chs.metric_rows(run.otlp["metrics"])
        run._metric_rows = [r for kind in rows.values() for r in kind]
    return run._metric_rows


def test_message_explorer_finds_a_real_message_and_links_its_trace(pipeline_run, chdb_run):
    """Search by the real ZoneMTA's Message-ID (as a user pastes it, with <>),
    its queue id, and a recipient domain; follow a row's trace link."""
    doc = _load("clickhouse", "explorer")
    [events] = [p for p in _panels(doc) if p["title"] == "Delivery events"]
    mid, qid = pipeline_run.message_ids[0], pipeline_run.queue_ids[0]
    for values in ({"message_id": mid, "queue_id": "", "domain": ""},
                   {"message_id": "", "queue_id": qid, "domain": ""},
                   {"message_id": "", "queue_id": "", "domain": "gmail"}):
        rows = ch_query(chdb_run, ch_sql(pipeline_run, events["targets"][0]["rawSql"], values))
        assert rows, values
        if values["message_id"]:
            assert {r["message_id"] for r in rows if r["message_id"]} == {mid.strip("<>")}
            assert {r["action"] for r in rows} >= {"QUEUED"}
    trace_id = next(r["trace_id"] for r in rows if r["trace_id"])
    [link] = [o["properties"][0]["value"][0] for o in events["fieldConfig"]["overrides"]
              if o["matcher"]["options"] == "trace_id"]
    panes = json.loads(urllib.parse.unquote(link["url"].split("panes=", 1)[1]))
    [query] = panes["trace"]["queries"]
    assert query["format"] == 3 and query["queryType"] == "traces"
    spans = ch_query(chdb_run, ch_sql(pipeline_run, query["rawSql"].replace("${__value.raw}", trace_id), {}))
    assert spans and {s["traceID"] for s in spans} == {trace_id}
    assert {"traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration",
            "tags", "serviceTags"} <= set(spans[0])


def test_sql_reply_normalisation_is_the_python_one(chdb_run):
    from monitoring.dashboards import sql
    replies = ["451-4.7.1 Try again in 300 s [mx3.example.net 1706712345 a1b2c3d4e5f6]",
               "421 4.7.0 Too many connections from 203.0.113.9, session 5f2c9a01b7",
               "550 5.1.1 <***@gmail.com>: Recipient address rejected",
               "  250\n 2.0.0   OK ", "x" * 300]
    for reply in replies:
        literal = "'" + reply.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
        [row] = ch_query(chdb_run, f"SELECT {sql.reply_kind(literal)} AS kind")
        assert row["kind"] == smtp_reply.normalise(reply), reply
