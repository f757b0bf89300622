"""The chart's Grafana dashboards: ConfigMaps for Grafana's dashboard sidecar,
rendered by the real Helm CLI."""
from __future__ import annotations

import json

import kubernetes_validate
import pytest
from tests.helm.conftest import CHART, KUBE_VERSION, ROOT

GENERATED = ROOT / "monitoring" / "generated"
SLUGS = sorted(p.stem for p in (GENERATED / "dashboards" / "prometheus").glob("*.json"))


def dashboards(docs):
    return {d["metadata"]["name"]: d for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboards"}


def test_chart_copies_of_the_generated_monitoring_are_in_sync():
    """helm/sync-monitoring.sh (make monitoring) copies them; run it after `python -m monitoring`."""
    copies = CHART / "files" / "monitoring"
    generated = {p.relative_to(GENERATED): p.read_text() for p in GENERATED.rglob("*") if p.is_file()}
    in_chart = {p.relative_to(copies): p.read_text() for p in copies.rglob("*") if p.is_file()}
    assert in_chart == generated, "run helm/sync-monitoring.sh"


@pytest.mark.parametrize("profile", ["prometheus", "clickhouse"])
def test_one_configmap_per_dashboard_for_grafanas_sidecar(render, profile):
    values = {} if profile == "prometheus" else {"monitoring.dashboards.profile": '"clickhouse"'}
    docs = render(values)
    maps = dashboards(docs)
    assert sorted(maps) == [f"rel-otel-mta-dashboard-{s}" for s in SLUGS]
    for slug in SLUGS:
        cm = maps[f"rel-otel-mta-dashboard-{slug}"]
        kubernetes_validate.validate(cm, KUBE_VERSION, strict=True)
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        [(key, text)] = cm["data"].items()
        assert key == f"otel-mta-{slug}.json"
        assert json.loads(text) == json.loads((GENERATED / "dashboards" / profile / f"{slug}.json").read_text())
        assert len(json.dumps(cm)) < 1024 * 1024       # a ConfigMap's limit
    datasources = {t["datasource"]["type"] for cm in maps.values()
                   for p in json.loads(next(iter(cm["data"].values())))["panels"] for t in p.get("targets", [])}
    assert ("grafana-clickhouse-datasource" in datasources) == (profile == "clickhouse")


def test_dashboards_can_be_switched_off(render):
    assert not dashboards(render({"monitoring.dashboards.enabled": "false"}))


def test_sidecar_label_folder_and_namespace_are_configurable(render):
    maps = dashboards(render({"monitoring.dashboards.labels": '{"grafana_dashboard": "mail"}',
                              "monitoring.dashboards.annotations": '{"k8s-sidecar-target-directory": "/tmp/dashboards/Mail"}',
                              "monitoring.dashboards.namespace": '"monitoring"'}))
    assert maps
    for cm in maps.values():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "mail"
        assert cm["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "/tmp/dashboards/Mail"}
        assert cm["metadata"]["namespace"] == "monitoring"


@pytest.mark.parametrize("values,message", [
    ({"monitoring.dashboards.profile": '"loki"'},
     "at '/monitoring/dashboards/profile': value must be one of 'prometheus', 'clickhouse'"),
    ({"monitoring.dashboards.labels": '{"grafana_dashboard": 1}'}, "at '/monitoring/dashboards/labels/grafana_dashboard'"),
])
def test_bad_dashboard_values_are_rejected(render, values, message):
    res = render(values, check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr
