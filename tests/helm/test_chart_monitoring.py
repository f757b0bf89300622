"""The chart's alerting and recording rules: a PrometheusRule validated against
the Prometheus Operator's own CRD schema, a plain rules ConfigMap, both checked
by promtool, each switchable, with configurable labels, runbook URLs and alert
labels. Rendered by the real Helm CLI."""
from __future__ import annotations

import filecmp
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from tests.helm.conftest import CHART, KUBE_VERSION, ROOT, set_args

from tests.backends.servers import backend_bin

GENERATED = ROOT / "monitoring" / "generated"
RULES = yaml.safe_load((GENERATED / "rules" / "otel-mta.rules.yaml").read_text())
DEFAULT_RUNBOOKS = yaml.safe_load((ROOT / "monitoring" / "config.yaml").read_text())["runbook_base_url"]
# The Prometheus Operator whose CRD the PrometheusRule must satisfy (its Go
# module carries the CRDs under example/prometheus-operator-crd/).
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"


@pytest.fixture(scope="module")
def prometheusrule_schema() -> dict:
    res = subprocess.run(["go", "mod", "download", "-json", PROMETHEUS_OPERATOR], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    crd_path = Path(json.loads(res.stdout)["Dir"]) / "example" / "prometheus-operator-crd" / \
        "monitoring.coreos.com_prometheusrules.yaml"
    crd = yaml.safe_load(crd_path.read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _python_regexes(v1["schema"]["openAPIV3Schema"])


def _python_regexes(node):
    """The CRD's patterns are Go regexps: Go allows a flag group after `^`
    (`^(?i)(abort|warn)?$`), Python only at the very start. Same meaning."""
    if isinstance(node, dict):
        out = {k: _python_regexes(v) for k, v in node.items()}
        pattern = out.get("pattern")
        if isinstance(pattern, str) and pattern.startswith("^(?i)"):
            out["pattern"] = "(?i)^" + pattern[len("^(?i)"):]
        return out
    if isinstance(node, list):
        return [_python_regexes(v) for v in node]
    return node


def validate(doc: dict, schema: dict) -> None:
    # OpenAPI v3 schemas are JSON Schema draft 4-7 in what they use here
    jsonschema.Draft7Validator(schema).validate(doc)


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith("-rules")]


def promtool_check(tmp_path: Path, groups: list) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    res = subprocess.run([str(backend_bin("promtool")), "check", "rules", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_chart_copies_of_the_generated_monitoring_files_are_in_sync():
    # helm/sync-monitoring.sh copies them (make monitoring runs it)
    copies = CHART / "files" / "monitoring"
    cmp = filecmp.dircmp(GENERATED, copies)

    def differences(c) -> list:
        out = c.left_only + c.right_only + c.diff_files + c.funny_files
        for sub in c.subdirs.values():
            out += differences(sub)
        return out
    assert not differences(cmp), "helm/otel-mta/files/monitoring differs: run `make monitoring`"


def test_by_default_a_rules_configmap_and_no_prometheusrule(render, tmp_path):
    docs = render()
    assert of_kind(docs, "PrometheusRule") == []
    [cm] = of_kind(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "monitoring"
    rules = yaml.safe_load(cm["data"]["otel-mta.rules.yaml"])
    assert rules == RULES            # the generated rules, unchanged
    promtool_check(tmp_path, rules["groups"])


def test_the_prometheusrule_satisfies_the_operators_crd(render, prometheusrule_schema, tmp_path):
    docs = render({"monitoring.rules.prometheusRule.enabled": "true",
                   "monitoring.rules.prometheusRule.labels": '{"release": "kube-prometheus-stack"}',
                   "monitoring.rules.prometheusRule.namespace": '"monitoring"',
                   "monitoring.rules.configMap.enabled": "false"})
    assert of_kind(docs, "ConfigMap") == []
    [rule] = of_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    # kube-prometheus-stack's Prometheus selects rules by its release label
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    validate(rule, prometheusrule_schema)
    assert rule["spec"]["groups"] == RULES["groups"]
    promtool_check(tmp_path, rule["spec"]["groups"])
    # the CRD schema is strict enough to catch a broken rule
    broken = json.loads(json.dumps(rule))
    broken["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, prometheusrule_schema)


def test_runbook_urls_and_alert_labels_can_be_set(render, tmp_path):
    docs = render({"monitoring.rules.prometheusRule.enabled": "true",
                   "monitoring.rules.runbookBaseUrl": '"https://wiki.example.org/mail/runbooks"',
                   "monitoring.rules.alertLabels": '{"team": "mail", "severity": "info"}'})
    for doc in (of_kind(docs, "PrometheusRule")[0]["spec"],
                yaml.safe_load(of_kind(docs, "ConfigMap")[0]["data"]["otel-mta.rules.yaml"])):
        alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
        assert len(alerts) == sum(1 for g in RULES["groups"] for r in g["rules"] if "alert" in r)
        expected = {(r["alert"], r["labels"]["severity"]) for g in RULES["groups"] for r in g["rules"] if "alert" in r}
        assert {(a["alert"], a["labels"]["severity"]) for a in alerts} == expected   # severity is the rule's
        for alert in alerts:
            assert alert["labels"]["team"] == "mail"
            assert alert["annotations"]["runbook_url"] == \
                f"https://wiki.example.org/mail/runbooks#{alert['alert'].lower()}"
        promtool_check(tmp_path, doc["groups"])
    # unset: the project's runbooks, as generated
    cm = of_kind(render(), "ConfigMap")[0]
    assert f"runbook_url: {DEFAULT_RUNBOOKS}#otelmtazonestalled" in cm["data"]["otel-mta.rules.yaml"]


def test_both_can_be_switched_off(render):
    docs = render({"monitoring.rules.configMap.enabled": "false"})
    assert of_kind(docs, "ConfigMap") == [] and of_kind(docs, "PrometheusRule") == []


def test_helm_lint_with_the_rules_on(helm):
    res = subprocess.run([helm, "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
                         + set_args({"monitoring.rules.prometheusRule.enabled": "true",
                                     "monitoring.rules.prometheusRule.labels": '{"release": "kps"}'}),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("values,message", [
    ({"monitoring.rules.runbookBaseUrl": '"https://wiki.example.org/runbooks#top"'},
     "at '/monitoring/rules/runbookBaseUrl'"),
    ({"monitoring.rules.prometheusRule.labels": '{"release": 1}'},
     "at '/monitoring/rules/prometheusRule/labels/release': got number, want string"),
    ({"monitoring.rules.prometheusRule.enabled": '"yes"'},
     "at '/monitoring/rules/prometheusRule/enabled': got string, want boolean"),
    ({"monitoring.rules.configMap.namespace": '"Not_A_Namespace"'}, "at '/monitoring/rules/configMap/namespace'"),
], ids=["runbook-fragment", "label-not-string", "enabled-not-bool", "bad-namespace"])
def test_bad_monitoring_values_are_refused_with_a_clear_message(render, values, message):
    res = render(values, check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr
