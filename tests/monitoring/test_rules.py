"""The alerting and recording rules (monitoring/): generated output matches the
committed file, promtool checks it and runs every alert's unit tests, every
alert has its runbook, and every expression runs against a Prometheus filled
by the real pipeline, naming only series the pipeline produces."""
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
from otel_mta import catalog
from tests.backends.servers import backend_bin, http_get_json

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "monitoring" / "generated" / "rules").glob("*.yaml"))
UNIT_TESTS = sorted((ROOT / "monitoring" / "tests").glob("*.test.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"

# Series that exist only after something went wrong (or with an option on), so a
# healthy pipeline run cannot show them. Their selectors are checked against the
# catalog instead: the name is a catalog metric as the OTLP translation names it,
# every label one of its attributes.
NEEDS_AN_INCIDENT = {
    "otelmta_receiver_dropped_records_total": "only after a receiver lost records",
    "otelmta_exporter_send_failed_log_records_total": "only after the exporter gave records up",
    "otelmta_exporter_send_failed_spans_total": "only after the exporter gave spans up",
    "otelmta_exporter_send_failed_metric_points_total": "only after the exporter gave points up",
    "otelmta_exporter_spool_size_bytes": "only with the spool on (OTEL_MTA_SPOOL=true)",
}
# Label values that only an incident produces: checked as "the label exists".
INCIDENT_VALUES = {("mta_delivery_attempts_total", "mta_bounce_category")}


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


def _relaxed(metric: str, matchers) -> list:
    """The matchers with incident-only label values replaced by "the label exists"."""
    return [(label, "!=", "") if (metric, label) in INCIDENT_VALUES else (label, op, value)
            for label, op, value in matchers]


def _selector(name: str, matchers) -> str:
    return name + "{" + ", ".join(f'{label}{op}"{value}"' for label, op, value in matchers) + "}"


def _translated_catalog() -> dict[str, set[str]]:
    """{Prometheus name: label names} of every catalog metric, translated as the
    Collector and Prometheus' OTLP receiver do (the names the pipeline run confirms)."""
    units = {"s": "_seconds", "By": "_bytes", "1": "_ratio", "ms": "_milliseconds", "us": "_microseconds"}
    out = {}
    for m in catalog.load().metrics.values():
        base = m.name.replace(".", "_") + units.get(m.unit, "")
        attrs = {a.replace(".", "_") for a in m.attributes} | {"job", "instance"}
        if m.type == "counter":
            out[base + "_total"] = attrs
        elif m.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[base + suffix] = attrs | ({"le"} if suffix == "_bucket" else set())
        else:
            out[base] = attrs
    return out


@pytest.fixture(scope="module")
def rule_selectors(pipeline_run):
    return [(rule, *_collect(pipeline_run.prometheus, rule["expr"])) for rule in all_rules()]


def _collect(prometheus, expr: str):
    found, groupings = [], []
    _walk(_parse(prometheus, expr), found, groupings)
    return found, groupings


def test_every_rule_runs_against_the_real_pipeline(pipeline_run):
    for rule in all_rules():
        pipeline_run.query(rule["expr"])   # raises on a PromQL error
    # the recording rules Prometheus evaluated from the committed file have values
    for rule in all_rules():
        if "record" in rule:
            assert pipeline_run.query(rule["record"]), f"{rule['record']} has no value in the pipeline run"


def test_every_selector_names_series_the_pipeline_produces(pipeline_run, rule_selectors):
    translated = _translated_catalog()
    problems = []
    for rule, selectors, _ in rule_selectors:
        name_of_rule = rule.get("alert") or rule.get("record")
        for metric, matchers, _under in selectors:
            if pipeline_run.query(f"count({_selector(metric, matchers)})"):
                continue
            relaxed = _relaxed(metric, matchers)
            if relaxed != matchers and pipeline_run.query(f"count({_selector(metric, relaxed)})"):
                continue   # the label is real; its values come with an incident
            if metric in NEEDS_AN_INCIDENT:
                labels = translated.get(metric)
                if labels is not None and {label for label, _, _ in matchers} <= labels:
                    continue
            problems.append(f"{name_of_rule}: {_selector(metric, matchers)} matches no series")
    assert not problems, "\n".join(problems)


def test_aggregations_keep_labels_the_series_have(pipeline_run, rule_selectors):
    """`sum by (mta_zone)` over series without mta_zone would quietly give one
    series for everything: every grouping label is on the series aggregated."""
    problems = []
    for rule, _, groupings in rule_selectors:
        for labels, inner in groupings:
            found = []
            _walk(inner, found, [])
            for label in labels:
                present = [m for m, matchers, _ in found
                           if pipeline_run.query(f"count({_selector(m, [*_relaxed(m, matchers), (label, '!=', '')])})")]
                if not present and not all(m in NEEDS_AN_INCIDENT for m, _, _ in found):
                    problems.append(f"{rule.get('alert') or rule.get('record')}: by ({label}) over "
                                    f"{sorted({m for m, _, _ in found})}: no such label")
    assert not problems, "\n".join(problems)


def test_absent_and_dead_mans_switches_watch_series_that_exist(pipeline_run, rule_selectors):
    """absent() fires when its selector matches nothing: in the healthy run it
    must match something (else it fires forever), and so must the sidecar
    series NoDeliveries counts on."""
    for rule, selectors, _ in rule_selectors:
        for metric, matchers, under in selectors:
            if "absent" in under or rule.get("alert") == "OtelMtaNoDeliveries":
                assert pipeline_run.query(f"count({_selector(metric, matchers)})"), (rule["alert"], metric)
    assert not pipeline_run.query(next(r["expr"] for r in alerting_rules() if r["alert"] == "OtelMtaSidecarAbsent"))


def test_healthy_traffic_through_the_real_pipeline_raises_no_alert(pipeline_run):
    """The run's traffic is healthy (tools/traffic.py's mix: greylisting, a few
    bounces; every dependency up): no otel-mta alert is pending or firing."""
    active = [r["metric"] for r in pipeline_run.query('ALERTS{alertname=~"OtelMta.*"}')]
    assert not active, f"alerts on healthy traffic: {active}"
