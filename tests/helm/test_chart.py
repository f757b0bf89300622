"""The otel-mta chart, rendered by the real Helm CLI across value combinations."""
from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest
import yaml
from tests.helm.conftest import CHART, KUBE_VERSION, ROOT, set_args

# Value combinations an operator would use (--set-json syntax: value is JSON).
COMBOS = {
    "defaults": {},
    "tail-sampling-scale-out": {"gateway.tailSampling.enabled": "true", "loadBalancer.enabled": "true",
                                "gateway.autoscaling.enabled": "true"},
    "daemonset": {"daemonset.enabled": "true", "sidecar.config": '{"privacy": {"recipient": "hmac"}}',
                  "sidecar.env": '{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod"}'},
    "daemonset-service-only": {"daemonset.enabled": "true", "daemonset.hostPorts": "false"},
    "clickhouse-only": {"gateway.backends.clickhouse.enabled": "true",
                        "gateway.backends.clickhouse.passwordSecret": '"clickhouse-auth"',
                        "monitoring.dashboards.profile": '"clickhouse"'},
    "grafana-stack-only": {"gateway.backends.tempo.enabled": "true", "gateway.backends.loki.enabled": "true",
                           "gateway.backends.prometheus.enabled": "true",
                           "gateway.podDisruptionBudget.enabled": "false",
                           "sidecar.existingSecret": '"mta-ingest"', "sidecar.otlpProtocol": '"http/protobuf"',
                           "gateway.extraConfig": '{"processors": {"batch": {"timeout": "5s"}}}'},
    "every-backend": {f"gateway.backends.{b}.enabled": "true" for b in
                      ["clickhouse", "prometheus", "victoriametrics", "tempo", "jaeger", "loki", "victorialogs", "otlp"]}
    | {"gateway.backends.otlp.endpoint": '"otlp.vendor.example:443"',
       "gateway.backends.victorialogs.secretHeaders": '{"Authorization": {"secret": "vl-auth", "key": "header"}}'},
    "no-gateway": {"gateway.enabled": "false", "sidecar.otlpEndpoint": '"http://otel-collector.observability:4317"'},
}

CONTAINER_KINDS = {"Deployment", "DaemonSet"}


def containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def test_chart_copies_of_collector_config_are_in_sync():
    # helm/sync-collector-config.sh copies them; run it after editing collector-config/.
    for name in ["gateway.yaml", "tail-sampling.yaml", "loadbalancer.yaml"]:
        chart_copy = CHART / "files" / "collector" / name
        assert chart_copy.read_text() == (ROOT / "collector-config" / name).read_text(), \
            f"{chart_copy} differs from collector-config/{name}: run helm/sync-collector-config.sh"


@pytest.mark.parametrize("combo", COMBOS, ids=list(COMBOS))
def test_helm_lint(helm, combo):
    res = subprocess.run([helm, "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
                         + set_args(COMBOS[combo]), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("combo", COMBOS, ids=list(COMBOS))
def test_rendered_manifests_are_valid_kubernetes(render, combo):
    docs = render(COMBOS[combo])
    assert docs
    for doc in docs:
        # strict: unknown fields are errors too
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("combo", COMBOS, ids=list(COMBOS))
def test_every_resource_has_recommended_labels(render, combo):
    for doc in render(COMBOS[combo]):
        labels = doc["metadata"]["labels"]
        for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"]:
            assert key in labels, (doc["kind"], doc["metadata"]["name"], key)


@pytest.mark.parametrize("combo", COMBOS, ids=list(COMBOS))
def test_every_container_is_hardened_and_sized(render, combo):
    for doc in render(COMBOS[combo]):
        if doc["kind"] not in CONTAINER_KINDS:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
            assert c["livenessProbe"] and c["readinessProbe"]
            # read-only root: everything written goes to a mounted volume
            mounts = {m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert mounts <= set(volumes)


def _sidecar_patch(docs) -> dict:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rel-otel-mta-sidecar-patch")
    return yaml.safe_load(cm["data"]["patch.yaml"])


def test_sidecar_container(render):
    docs = render({})
    patch = _sidecar_patch(docs)
    (c,) = patch["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    for var, path in [("K8S_POD_NAME", "metadata.name"), ("K8S_NAMESPACE_NAME", "metadata.namespace"),
                      ("K8S_NODE_NAME", "spec.nodeName"), ("K8S_POD_UID", "metadata.uid")]:
        assert env[var]["valueFrom"]["fieldRef"]["fieldPath"] == path
    assert env["OTEL_MTA_DATA_DIR"]["value"] == "/var/lib/otel-mta"
    assert {"name": "otel-mta-data", "mountPath": "/var/lib/otel-mta"} in c["volumeMounts"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9478}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9478}
    ports = {(p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert ports == {(31239, "UDP"), (12201, "UDP"), (12201, "TCP"), (9477, "TCP"), (9478, "TCP")}
    # configuration and the ingest key come from the chart's ConfigMap and Secret
    env_cm = next(d for d in docs if d["metadata"]["name"] == "rel-otel-mta-sidecar-env")
    assert env_cm["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://rel-otel-mta-gateway.mail.svc:4317"
    assert env_cm["data"]["OTEL_METRIC_EXPORT_INTERVAL"] == "60000"
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert len(secret["data"]["OTEL_MTA_EVENTS_API_KEY"]) > 40
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in c["envFrom"]


def test_sidecar_patch_makes_a_valid_zonemta_deployment(render):
    """Apply the patch to a plain ZoneMTA Deployment the way `kubectl patch`
    (strategic merge) does for these fields: containers and volumes merge by name."""
    zonemta = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "zonemta"},
        "spec": {"selector": {"matchLabels": {"app": "zonemta"}}, "template": {
            "metadata": {"labels": {"app": "zonemta"}},
            "spec": {"containers": [{"name": "zonemta", "image": "zonemta:3.10", "ports": [{"containerPort": 2525}]}],
                     "volumes": [{"name": "config", "configMap": {"name": "zonemta"}}]}}}}
    patch = _sidecar_patch(render({}))["spec"]["template"]["spec"]
    pod = zonemta["spec"]["template"]["spec"]
    for field in ("containers", "volumes"):
        names = {x["name"] for x in pod[field]}
        pod[field] += [x for x in patch[field] if x["name"] not in names]
    kubernetes_validate.validate(zonemta, KUBE_VERSION, strict=True)
    assert [c["name"] for c in pod["containers"]] == ["zonemta", "otel-mta"]


def test_loadbalancer_points_sidecars_and_tier_at_the_right_services(render):
    docs = render(COMBOS["tail-sampling-scale-out"])
    env_cm = next(d for d in docs if d["metadata"]["name"] == "rel-otel-mta-sidecar-env")
    assert env_cm["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://rel-otel-mta-loadbalancer.mail.svc:4317"
    lb = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rel-otel-mta-loadbalancer")
    env = {e["name"]: e.get("value") for e in containers(lb)[0]["env"]}
    headless = next(d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    assert env["OTELCOL_GATEWAY_HOSTNAME"].startswith(headless["metadata"]["name"] + ".mail.svc")
    gw = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rel-otel-mta-gateway")
    assert "replicas" not in gw["spec"]  # the HPA owns it
    assert "--config=/conf/tail-sampling.yaml" in containers(gw)[0]["args"]


def test_daemonset_mode(render):
    docs = render(COMBOS["daemonset"])
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    (c,) = containers(ds)
    host = {(p["hostPort"], p["protocol"]) for p in c["ports"] if "hostPort" in p}
    assert {(31239, "UDP"), (12201, "UDP"), (12201, "TCP")} <= host
    assert {"name": "OTEL_MTA_ZONEMTA_API_URL", "value": "off"} in c["env"]
    assert c["args"] == ["run", "--config", "/etc/otel-mta/config.yaml"]
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "rel-otel-mta-node")
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    svc_ports = {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]}
    assert svc_ports >= {(31239, "UDP"), (12201, "UDP"), (12201, "TCP")}
    no_host = render(COMBOS["daemonset-service-only"])
    ds = next(d for d in no_host if d["kind"] == "DaemonSet")
    assert not any("hostPort" in p for p in containers(ds)[0]["ports"])


BAD_VALUES = [
    ({"gateway.replicas": '"two"'}, "at '/gateway/replicas': got string, want integer"),
    ({"sidecar.otlpProtocol": '"udp"'}, "at '/sidecar/otlpProtocol': value must be one of 'grpc', 'http/protobuf'"),
    ({"gatway": '{"replicas": 2}'}, "additional properties 'gatway' not allowed"),
    ({"gateway.backends.tempo.endpoint": '"http://tempo:4317"'}, "at '/gateway/backends/tempo/endpoint'"),
    ({"sidecar.remoteLogEndpoint": '"31239"'}, "at '/sidecar/remoteLogEndpoint'"),
    ({"sidecar.resources.limits": "null"},
     "at '/sidecar/resources': missing property 'limits'"),
    ({"gateway.tailSampling.successPercent": "150"}, "at '/gateway/tailSampling/successPercent'"),
    ({"sidecar.env": '{"BAD-NAME": "x"}'}, "invalid propertyName 'BAD-NAME'"),
    ({"gateway.backends.otlp.enabled": "true"}, "gateway.backends.otlp.endpoint: set it"),
    ({"gateway.backends.victoriametrics.endpoint": '"victoria-metrics:8428"'},
     "at '/gateway/backends/victoriametrics/endpoint'"),
]


@pytest.mark.parametrize("values,message", BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_are_rejected_with_a_clear_message(render, values, message):
    res = render(values, check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


def test_database_urls_go_into_the_secret_not_the_configmap(render):
    import base64
    docs = render({"sidecar.mongodbUri": '"mongodb://zonemta:s3cret@mongo:27017/zone-mta"',
                   "sidecar.redisUrl": '"redis://:s3cret@redis:6379/3"'})
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert not any("s3cret" in yaml.safe_dump(d) for d in configmaps)
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["OTEL_MTA_MONGODB_URI"].startswith("mongodb://zonemta:s3cret@")
    assert data["OTEL_MTA_REDIS_URL"] == "redis://:s3cret@redis:6379/3"


def test_host_system_metrics_come_from_the_daemonset_not_every_sidecar(render):
    docs = render({"daemonset.enabled": "true"})
    env_cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("sidecar-env"))
    assert env_cm["data"]["OTEL_MTA_HOST_SYSTEM_METRICS"] == "false"
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_MTA_HOST_SYSTEM_METRICS"] == "true"


@pytest.mark.parametrize("limit, expected", [('"1Gi"', 858993459), ('"1.5Gi"', 1288490188), ('"700M"', 560000000),
                                             ("2000000000", 1600000000)])
def test_collectors_gomemlimit_is_80_percent_of_their_memory_limit(render, limit, expected):
    """Go must collect harder before the kernel's limit kills the Collector:
    GOMEMLIMIT is 80 % of the container's limit, whatever form the limit takes."""
    docs = render({"loadBalancer.enabled": "true", "gateway.resources.limits.memory": limit,
                   "loadBalancer.resources.limits.memory": limit})
    values = [e["value"] for d in docs if d["kind"] == "Deployment" for c in containers(d) if c["name"] == "otelcol"
              for e in c["env"] if e["name"] == "GOMEMLIMIT"]
    assert values == [str(expected)] * 2
