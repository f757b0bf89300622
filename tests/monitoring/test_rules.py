"""The alerting and recording rules (monitoring/): generated output matches the
committed file, promtool checks it and runs every alert's unit tests, every
alert has its runbook, and every expression runs against a Prometheus and a
VictoriaMetrics (with vmalert) filled by the real pipeline, naming only series
the pipeline produces. The run's healthy traffic raises no alert; its
incidents (tests/monitoring/incidents.py) raise the alerts meant for them, in
both rule engines."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from monitoring import rules
from tests.backends.servers import backend_bin, http_get_json
from tests.monitoring import incidents

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "monitoring" / "generated" / "rules").glob("*.yaml"))
UNIT_TESTS = sorted((ROOT / "monitoring" / "tests").glob("*.test.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def promtool() -> str:
    return str(backend_bin("promtool"))


def alerting_rules() -> list[dict]:
    doc = yaml.safe_load(RULE_FILES[0].read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def all_rules() -> list[dict]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


# -- generated, checked, unit-tested ------------------------------------------------
def test_the_committed_rules_are_what_the_config_generates():
    assert RULE_FILES == [rules.OUTPUT]
    assert rules.OUTPUT.read_text() == rules.render(), \
        "monitoring/generated/rules is stale: run `make monitoring` and commit the result"
    res = subprocess.run([sys.executable, "-m", "monitoring", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr   # docs/runbooks.md's table too


def test_promtool_check_rules_accepts_every_rule_file():
    res = subprocess.run([promtool(), "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in res.stdout


def test_promtool_unit_tests_pass():
    res = subprocess.run([promtool(), "test", "rules", *map(str, UNIT_TESTS)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(UNIT_TESTS)


def test_every_alert_is_unit_tested_firing_and_silent():
    fired, silent = set(), set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if expected:
                    fired |= {(check["alertname"], a["exp_labels"]["severity"]) for a in expected}
                else:
                    silent.add(check["alertname"])
    wanted = {(r["alert"], r["labels"]["severity"]) for r in alerting_rules()}
    assert wanted - fired == set(), "alerts (and severities) no unit test sees fire"
    assert {a for a, _ in wanted} - silent == set(), "alerts no unit test checks silent"


def test_the_unit_tests_fail_when_thresholds_move(tmp_path):
    """A unit test that cannot fail is no test: with thresholds moved in the
    config, the generated rules fail the same unit tests."""
    config = yaml.safe_load(rules.CONFIG.read_text())
    moved = {"QueueStuck": ("threshold", "2h"), "DomainDeferralRateHigh": ("threshold", 0.8),
             "SendingIpRefused": ("min_attempts", 5000), "BounceRateHigh": ("critical", 0.25),
             "RedisMemoryNearLimit": ("threshold", 0.99), "ZoneStalled": ("window", "1h")}
    for alert, (key, value) in moved.items():
        config["alerts"][alert][key] = value
    generated = tmp_path / "generated" / "rules" / rules.OUTPUT.name
    generated.parent.mkdir(parents=True)
    generated.write_text(rules.render(rules.Config(config)))
    shutil.copytree(ROOT / "monitoring" / "tests", tmp_path / "tests")
    res = subprocess.run([promtool(), "test", "rules", *sorted(map(str, (tmp_path / "tests").glob("*.yaml")))],
                         capture_output=True, text=True)
    assert res.returncode != 0
    for alert in moved:
        assert f"alertname: OtelMta{alert}," in res.stdout + res.stderr, f"moving {alert}'s {moved[alert][0]} broke no test"


# -- conventions and runbooks -------------------------------------------------------------
def test_alerts_follow_the_mixin_conventions():
    cfg = rules.Config.load()
    names = {r["alert"] for r in alerting_rules()}
    assert {cfg.prefix + a for a in cfg.raw["alerts"]} == names   # no alert without config, no dead config
    for rule in alerting_rules():
        assert re.fullmatch(r"OtelMta(?:[A-Z][a-z0-9]+)+", rule["alert"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert "{{" in rule["annotations"]["description"] or rule["alert"] in (
            "OtelMtaNoDeliveries", "OtelMtaSidecarAbsent"), f"{rule['alert']}: description names no value"
        assert rule.get("for") or rule["alert"] == "OtelMtaRedisEvictingKeys", f"{rule['alert']} has no for:"
    for name, alert in cfg.raw["alerts"].items():
        assert len(alert["source"].split()) >= 8, f"{name}: say where its threshold comes from"
    for rule in all_rules():
        if "record" in rule:   # level:metric:operations
            assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_every_alert_has_a_runbook_and_every_anchor_exists():
    doc = RUNBOOKS.read_text()
    anchors = _anchors(doc)
    base = rules.Config.load().raw["runbook_base_url"]
    for rule in alerting_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(base + "#") and url.endswith("docs/runbooks.md#" + rule["alert"].lower())
        assert rule["alert"].lower() in anchors, f"docs/runbooks.md has no section for {rule['alert']}"
        section = doc.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Means**", "**Check first**", "**Do**", "**Threshold**"):
            assert part in section, f"{rule['alert']}'s runbook lacks {part}"
    for link in re.findall(r"\]\(#([^)]+)\)", doc):
        assert link in anchors, f"docs/runbooks.md links to #{link}, which is no heading"


# -- against the real pipeline ------------------------------------------------------------
BACKENDS = ("prometheus", "victoriametrics")


def _parse(prometheus, expr: str) -> dict:
    url = f"{prometheus.base}/api/v1/parse_query?{urllib.parse.urlencode({'query': expr})}"
    return http_get_json(url)["data"]


def _walk(node, found: list, groupings: list, under: tuple = ()):
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in ("vectorSelector", "matrixSelector"):
            found.append((node["name"], [(m["name"], m["type"], m["value"]) for m in node["matchers"]
                                         if m["name"] != "__name__"], under))
        if kind == "aggregation" and node.get("grouping") and not node.get("without"):
            groupings.append((tuple(node["grouping"]), node["expr"]))
        if kind == "call":
            under = under + (node["func"]["name"],)
        for value in node.values():
            _walk(value, found, groupings, under)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found, groupings, under)


def _selector(name: str, matchers) -> str:
    return name + "{" + ", ".join(f'{label}{op}"{value}"' for label, op, value in matchers) + "}"


@pytest.fixture(scope="module")
def rule_selectors(pipeline_run):
    return [(rule, *_collect(pipeline_run.prometheus, rule["expr"])) for rule in all_rules()]


def _collect(prometheus, expr: str):
    found, groupings = [], []
    _walk(_parse(prometheus, expr), found, groupings)
    return found, groupings


def _query(pipeline_run, backend: str, expr: str) -> list:
    return pipeline_run.backend(backend).query(expr, pipeline_run.eval_time)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_rule_runs_against_the_real_pipeline(pipeline_run, backend):
    for rule in all_rules():
        _query(pipeline_run, backend, rule["expr"])   # raises on a PromQL / MetricsQL error
    # the recording rules Prometheus (and vmalert, writing back into
    # VictoriaMetrics) evaluated from the committed file have values
    for rule in all_rules():
        if "record" in rule:
            assert _query(pipeline_run, backend, rule["record"]), f"{rule['record']} has no value on {backend}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_selector_names_series_the_pipeline_produces(pipeline_run, rule_selectors, backend):
    """Every selector of every rule, with its label matchers, matches series in
    the run: a misspelt metric, label or label value fails. The incidents make
    the series healthy traffic has not (send failures, the spool, drops, refusals
    of a sending IP)."""
    problems = []
    for rule, selectors, _ in rule_selectors:
        for metric, matchers, _under in selectors:
            if not _query(pipeline_run, backend, f"count({_selector(metric, matchers)})"):
                problems.append(f"{rule.get('alert') or rule.get('record')}: {_selector(metric, matchers)} "
                                f"matches no series on {backend}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("backend", BACKENDS)
def test_aggregations_keep_labels_the_series_have(pipeline_run, rule_selectors, backend):
    """`sum by (mta_zone)` over series without mta_zone would quietly give one
    series for everything: every grouping label is on the series aggregated."""
    problems = []
    for rule, _, groupings in rule_selectors:
        for labels, inner in groupings:
            found = []
            _walk(inner, found, [])
            for label in labels:
                present = [m for m, matchers, _ in found
                           if _query(pipeline_run, backend, f"count({_selector(m, [*matchers, (label, '!=', '')])})")]
                if not present:
                    problems.append(f"{rule.get('alert') or rule.get('record')}: by ({label}) over "
                                    f"{sorted({m for m, _, _ in found})}: no such label on {backend}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("backend", BACKENDS)
def test_absent_and_dead_mans_switches_watch_series_that_exist(pipeline_run, rule_selectors, backend):
    """absent() fires when its selector matches nothing: in the run it must
    match something (else it fires forever), and so must the sidecar series
    NoDeliveries counts on."""
    for rule, selectors, _ in rule_selectors:
        for metric, matchers, under in selectors:
            if "absent" in under or rule.get("alert") == "OtelMtaNoDeliveries":
                assert _query(pipeline_run, backend, f"count({_selector(metric, matchers)})"), (rule["alert"], metric)
    absent = next(r["expr"] for r in alerting_rules() if r["alert"] == "OtelMtaSidecarAbsent")
    assert not _query(pipeline_run, backend, absent)


# -- the alerts the run raises ---------------------------------------------------------------
NOT_IDENTITY = {"__name__", "alertname", "alertstate", "alertgroup"}


def _prometheus_alerts(pipeline_run) -> list[tuple[str, str, dict]]:
    """(alert, state, labels) of every otel-mta alert Prometheus' rule engine has active."""
    return [(r["metric"]["alertname"], r["metric"]["alertstate"],
             {k: v for k, v in r["metric"].items() if k not in NOT_IDENTITY})
            for r in pipeline_run.query('ALERTS{alertname=~"OtelMta.*"}')]


def _vmalert_alerts(pipeline_run) -> list[tuple[str, str, dict]]:
    """The same from vmalert, as it had them at eval_time (it evaluates on: once
    the sidecars are gone, VictoriaMetrics calls their series stale after a few
    missed samples, not after Prometheus' 5 minutes)."""
    return [(a["name"], a["state"], {k: v for k, v in a["labels"].items() if k not in NOT_IDENTITY})
            for a in pipeline_run.vmalert_alerts if a["name"].startswith("OtelMta")]


def _on_an_incident(labels: dict) -> bool:
    return any(labels.get(label) in values for label, values in incidents.INCIDENT_LABELS.items())


def _describe(alerts) -> str:
    return "\n".join(f"{name} ({state}) {labels}" for name, state, labels in alerts)


def test_healthy_traffic_through_the_real_pipeline_raises_no_alert(pipeline_run):
    """The run's healthy part (the sidecars mail-0 and rs-0, tools/traffic.py's
    mix: greylisting, a few bounces; the real ZoneMTA's zones default and
    bounces, sending from 127.0.0.1; every dependency up) raises no otel-mta
    alert, pending or firing; and the incidents raise none but the alerts
    meant for them (the next test)."""
    alerts = _prometheus_alerts(pipeline_run)
    healthy = [a for a in alerts if not _on_an_incident(a[2])]
    assert not healthy, f"alerts on healthy traffic:\n{_describe(healthy)}"
    unexpected = [a for a in alerts if not any(a[0] == name and labels.items() <= a[2].items()
                                                 for name, labels in incidents.MUST_ALERT)]
    assert not unexpected, f"alerts the incidents should not raise:\n{_describe(unexpected)}"


@pytest.mark.parametrize("engine", ["prometheus", "vmalert"])
def test_the_incidents_raise_their_alerts(pipeline_run, engine):
    """Each incident's alert is active in the real rule engine: pending, since
    the run (~1 min) is shorter than their `for:` (2 to 10 min): the
    expression returned the incident's series at every evaluation since it
    started. Dropped datagrams -> TelemetryDropped, the Collector away ->
    ExportFailing, Redis not there -> RedisDown, receivers refusing the
    listed IP -> SendingIpRefused."""
    alerts = _prometheus_alerts(pipeline_run) if engine == "prometheus" else _vmalert_alerts(pipeline_run)
    for name, labels in incidents.MUST_ALERT:
        matching = [a for a in alerts if a[0] == name and labels.items() <= a[2].items()]
        assert matching, f"{name} {labels} is not active in {engine}; active:\n{_describe(alerts)}"
        assert {state for _, state, _ in matching} <= {"pending", "firing"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_backlog_holds_while_the_collector_is_away(pipeline_run, backend):
    """ExportBacklog needs 15 min; while incident-0's Collector was away its
    expression returned incident-0 (the export queue full, requests spooled):
    the samples of that time reached the backends when the spool drained. Ten
    seconds after the Collector came back, the spool is empty again."""
    expr = next(r["expr"] for r in alerting_rules() if r["alert"] == "OtelMtaExportBacklog")
    engine = pipeline_run.backend(backend)
    assert len(pipeline_run.incidents.outages) == len(incidents.OUTAGES)
    for start, end in pipeline_run.incidents.outages:
        rows = engine.query_range(expr, start + 1, end, step=1)
        assert {r["metric"].get("instance") for r in rows} == {incidents.INCIDENT_POD}, (start, end, rows)
        assert not engine.query(expr, end + 10), f"still backed up 10 s after the outage ending at {end}"


# Alerts whose rules have a volume guard: `rate(x[w]) * w >= N` attempts in the
# window. MetricsQL's rate() is the real rate over the samples the window holds
# (no extrapolation to the window's edges), Prometheus' the increase divided by
# the whole window: over a series younger than the window (the whole run here;
# in production a new domain, IP or zone) the guard holds on VictoriaMetrics
# with far fewer attempts. docs/dashboards.md, "VictoriaMetrics".
VOLUME_GUARDED = {"OtelMtaZoneDeferralRateHigh", "OtelMtaDomainDeferralRateHigh", "OtelMtaBounceRateHigh",
                  "OtelMtaSendingIpRefused"}


def test_vmalert_differs_from_prometheus_only_where_documented(pipeline_run):
    """The same rule file, the same data: vmalert raises every alert Prometheus
    raises, and more only for the volume-guarded ratio alerts over series
    younger than their window."""
    def key(alert):
        return alert[0], tuple(sorted(alert[2].items()))
    prom = {key(a) for a in _prometheus_alerts(pipeline_run)}
    vm = {key(a) for a in _vmalert_alerts(pipeline_run)}
    assert prom - vm == set(), f"Prometheus raises what vmalert does not: {sorted(prom - vm)}"
    assert {name for name, _ in vm - prom} <= VOLUME_GUARDED, sorted(vm - prom)


def test_a_key_given_twice_in_the_config_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys: a merge that leaves a second
    `dashboards:` (or a second alert) would silently replace the first."""
    from monitoring.rules import read_config
    (tmp_path / "c.yaml").write_text("alerts:\n  QueueStuck: {threshold: 30m}\n  QueueStuck: {threshold: 1h}\n")
    with pytest.raises(ValueError, match="QueueStuck' appears twice"):
        read_config(tmp_path / "c.yaml")
