"""gateway.backends: each backend is a switch. What the chart renders is run
through the built Collector (`validate`, and `print-config` for the merged
configuration a pod would run), so these tests read the Collector's own view:
which exporters exist, which pipelines feed them, which URL each one calls."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from tests.backends.rendered_gateway import CHART, PROFILES, ROOT, RenderedGateway, render_chart
from tests.collector.otelcol_harness import build_collector

INTAKE = {"traces", "logs", "metrics", "traces/discard", "logs/discard", "metrics/discard"}
ALL_SIGNALS = ("traces", "logs", "metrics")

# backend (as switched on) -> (values, exporter id, signals, the URL/endpoint the exporter calls)
BACKENDS = {
    "clickhouse": ({}, "clickhouse", ALL_SIGNALS, "tcp://clickhouse:9000?dial_timeout=10s"),
    "prometheus": ({"endpoint": "http://prometheus:9090/api/v1/write"}, "prometheus_remote_write/prometheus",
                   ("metrics",), "http://prometheus:9090/api/v1/write"),
    "victoriametrics": ({"endpoint": "http://vm:8428/"}, "otlp_http/victoriametrics", ("metrics",),
                        "http://vm:8428/opentelemetry/v1/metrics"),
    "tempo": ({}, "otlp_grpc/tempo", ("traces",), "tempo:4317"),
    "jaeger": ({"endpoint": "jaeger.obs:4317"}, "otlp_grpc/jaeger", ("traces",), "jaeger.obs:4317"),
    "loki": ({}, "otlp_http/loki", ("logs",), "http://loki-gateway/otlp"),
    "victorialogs": ({"endpoint": "http://vl:9428"}, "otlp_http/victorialogs", ("logs",),
                     "http://vl:9428/insert/opentelemetry/v1/logs"),
    "otlp": ({"endpoint": "api.vendor.example:443"}, "otlp_grpc/otlp", ALL_SIGNALS, "api.vendor.example:443"),
    "otlp-http": ({"protocol": "http/protobuf", "endpoint": "https://otlp.vendor.example"}, "otlp_http/otlp",
                  ALL_SIGNALS, "https://otlp.vendor.example"),
}
# every variable a backend file reads: none may be set for a backend that is off
BACKEND_ENV = {"CLICKHOUSE_", "PROMETHEUS_", "VICTORIAMETRICS_", "TEMPO_", "JAEGER_", "LOKI_", "VICTORIALOGS_",
               "OTLP_", "OTELCOL_TENANT_ID"}


@pytest.fixture(scope="session")
def otelcol_bin():
    return build_collector()


def _switch_on(name: str, values: dict) -> dict:
    key = "otlp" if name.startswith("otlp") else name
    out = {f"gateway.backends.{key}.enabled": "true"}
    out.update({f"gateway.backends.{key}.{k}": json.dumps(v) for k, v in values.items()})
    return out


def _exporter_url(cfg: dict, exporter: str) -> str:
    exp = cfg["exporters"][exporter]
    if "http" in exp:      # remote write: its HTTP client settings are nested
        return exp["http"]["endpoint"]
    return exp.get("metrics_endpoint") or exp.get("logs_endpoint") or exp["endpoint"]


def _headers(cfg: dict, exporter: str) -> dict:
    exp = cfg["exporters"][exporter]
    headers = exp.get("http", exp).get("headers") or []
    return {h["name"]: h["value"] for h in headers} if isinstance(headers, list) else headers


def _backend_pipelines(cfg: dict) -> dict:
    return {name: p for name, p in cfg["service"]["pipelines"].items() if name not in INTAKE}


def test_chart_copies_of_backend_files_are_in_sync():
    # helm/sync-collector-config.sh copies them; run it after editing collector-config/backends/.
    canonical = {p.name: p.read_text() for p in (ROOT / "collector-config" / "backends").glob("*.yaml")}
    copies = {p.name: p.read_text() for p in (CHART / "files" / "collector" / "backends").glob("*.yaml")}
    assert copies == canonical, "run helm/sync-collector-config.sh"


@pytest.mark.parametrize("name", BACKENDS)
def test_each_backend_alone_is_one_exporter_fed_by_its_signals(render, otelcol_bin, tmp_path, name):
    values, exporter, signals, url = BACKENDS[name]
    docs = render(_switch_on(name, values))
    gw = RenderedGateway.from_manifests(docs, tmp_path / "conf")
    res = gw.validate(otelcol_bin)
    assert res.returncode == 0, res.stderr
    cfg = gw.effective_config(otelcol_bin)
    assert set(cfg["exporters"]) == {exporter, "nop"}
    pipelines = _backend_pipelines(cfg)
    assert {p: (v["receivers"], v["exporters"]) for p, v in pipelines.items()} == {
        f"{s}/{name.split('-')[0]}": ([f"forward/{s}"], [exporter]) for s in signals}
    assert _exporter_url(cfg, exporter) == url
    # the data goes through the intake's memory limiter and batch once, then fans out
    for s in ALL_SIGNALS:
        assert cfg["service"]["pipelines"][s]["processors"] == ["memory_limiter", "batch"]
        assert cfg["service"]["pipelines"][s]["exporters"] == [f"forward/{s}"]
    # nothing of the other backends: no file, no variable
    assert [f for f in gw.files if f.startswith("backend-")] == [f"backend-{name.split('-')[0]}.yaml"]
    own = {"clickhouse": "CLICKHOUSE_", "otlp": "OTLP_", "otlp-http": "OTLP_"}.get(name, name.upper() + "_")
    others = {v for v in gw.env if any(v.startswith(p) for p in BACKEND_ENV - {own, "OTELCOL_TENANT_ID"})}
    assert not others


def test_no_backend_on_renders_a_gateway_that_accepts_and_discards(render, otelcol_bin, tmp_path):
    gw = RenderedGateway.from_manifests(render(), tmp_path / "conf")
    assert gw.validate(otelcol_bin).returncode == 0
    cfg = gw.effective_config(otelcol_bin)
    assert set(cfg["exporters"]) == {"nop"}
    assert set(cfg["service"]["pipelines"]) == INTAKE
    assert not [v for v in gw.env if any(v.startswith(p) for p in BACKEND_ENV)]


def test_a_signal_without_backend_is_accepted_and_dropped_at_run_time(render, otelcol_bin, tmp_path):
    """Only Jaeger on (pointed at a closed port): logs and metrics are still
    accepted by the running gateway, so senders see no error for them."""
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
    from opentelemetry.proto.logs.v1 import logs_pb2

    from tests.stack.proc import free_port

    docs = render({"gateway.backends.jaeger.enabled": "true",
                   "gateway.backends.jaeger.endpoint": f'"127.0.0.1:{free_port()}"'})
    col = RenderedGateway.from_manifests(docs, tmp_path / "conf").start(otelcol_bin, tmp_path / "run")
    try:
        with grpc.insecure_channel(col.grpc_endpoint) as ch:
            req = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
                scope_logs=[logs_pb2.ScopeLogs(log_records=[logs_pb2.LogRecord(severity_text="INFO")])])])
            logs_service_pb2_grpc.LogsServiceStub(ch).Export(req, timeout=10)
            metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(
                metrics_service_pb2.ExportMetricsServiceRequest(), timeout=10)
    finally:
        col.stop()


def test_headers_and_secret_headers_reach_the_exporter(render, otelcol_bin, tmp_path):
    docs = render({"gateway.backends.victorialogs.enabled": "true",
                   "gateway.backends.victorialogs.headers": '{"AccountID": "12", "X-Note": "cost$5"}',
                   "gateway.backends.victorialogs.secretHeaders":
                       '{"Authorization": {"secret": "vl-auth", "key": "header"}}'})
    gw = RenderedGateway.from_manifests(docs, tmp_path / "conf")
    assert gw.secret_env == {"OTELCOL_VICTORIALOGS_HEADER_AUTHORIZATION": ("vl-auth", "header")}
    assert "Basic" not in yaml.safe_dump(docs)          # the credential itself is never in a manifest
    cfg = gw.effective_config(otelcol_bin, secrets={("vl-auth", "header"): "Basic dXNlcjpwdw=="})
    assert _headers(cfg, "otlp_http/victorialogs") == {
        "AccountID": "12", "X-Note": "cost$5", "Authorization": "Basic dXNlcjpwdw=="}


def test_tenant_header_goes_to_tempo_loki_and_prometheus(render, otelcol_bin, tmp_path):
    docs = render({"gateway.tenantId": '"mail"', **_switch_on("tempo", {}), **_switch_on("loki", {}),
                   **_switch_on("prometheus", {}), **_switch_on("jaeger", {})})
    cfg = RenderedGateway.from_manifests(docs, tmp_path / "conf").effective_config(otelcol_bin)
    headers = {e: _headers(cfg, e) for e in ("otlp_grpc/tempo", "otlp_http/loki", "prometheus_remote_write/prometheus")}
    assert headers == dict.fromkeys(headers, {"X-Scope-OrgID": "mail"})
    assert "X-Scope-OrgID" not in _headers(cfg, "otlp_grpc/jaeger")


def test_tail_sampling_samples_once_before_the_fan_out(render, otelcol_bin, tmp_path):
    docs = render({"gateway.tailSampling.enabled": "true", **_switch_on("jaeger", {}), **_switch_on("tempo", {})})
    gw = RenderedGateway.from_manifests(docs, tmp_path / "conf")
    assert gw.validate(otelcol_bin).returncode == 0
    pipes = gw.effective_config(otelcol_bin)["service"]["pipelines"]
    assert pipes["traces"]["processors"] == ["memory_limiter", "tail_sampling", "batch"]
    assert pipes["traces/jaeger"]["receivers"] == pipes["traces/tempo"]["receivers"] == ["forward/traces"]
    assert "processors" not in pipes["traces/jaeger"] or not pipes["traces/jaeger"]["processors"]


PROFILE_EXPORTERS = {
    "clickhouse": {"traces": ["clickhouse"], "logs": ["clickhouse"], "metrics": ["clickhouse"]},
    "prometheus-tempo-loki": {"traces": ["otlp_grpc/tempo"], "logs": ["otlp_http/loki"],
                              "metrics": ["prometheus_remote_write/prometheus"]},
    "victoria-jaeger": {"traces": ["otlp_grpc/jaeger"], "logs": ["otlp_http/victorialogs"],
                        "metrics": ["otlp_http/victoriametrics"]},
}


def test_every_profile_is_tested():
    assert {p.stem for p in PROFILES.glob("*.yaml")} == set(PROFILE_EXPORTERS)


@pytest.mark.parametrize("profile", PROFILE_EXPORTERS)
def test_profile_renders_a_config_the_collector_accepts(helm, otelcol_bin, tmp_path, profile):
    docs = render_chart(helm, values_files=[PROFILES / f"{profile}.yaml"])
    gw = RenderedGateway.from_manifests(docs, tmp_path / "conf")
    res = gw.validate(otelcol_bin)
    assert res.returncode == 0, res.stderr
    cfg = gw.effective_config(otelcol_bin)
    fed = {s: sorted(e for p, v in _backend_pipelines(cfg).items() if p.startswith(s + "/") for e in v["exporters"])
           for s in ALL_SIGNALS}
    assert fed == PROFILE_EXPORTERS[profile]
    assert set(cfg["exporters"]) == {e for es in fed.values() for e in es} | {"nop"}


# -- docs/backends.md: every values example in it renders and validates ----------------------
DOC = (ROOT / "docs" / "backends.md").read_text()
DOC_VALUES = [b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if b.startswith("gateway:")]


def test_the_docs_show_each_profile_as_it_is():
    for profile in PROFILES.glob("*.yaml"):
        i = DOC.index(f"`helm/otel-mta/profiles/{profile.name}`")
        block = re.search(r"```yaml\n(.*?)```", DOC[i:], re.S).group(1)
        assert yaml.safe_load(block) == yaml.safe_load(profile.read_text()), profile.name


@pytest.mark.parametrize("block", DOC_VALUES, ids=range(len(DOC_VALUES)))
def test_every_values_example_in_the_docs_validates(helm, otelcol_bin, tmp_path, block):
    values = tmp_path / "values.yaml"
    values.write_text(block)
    gw = RenderedGateway.from_manifests(render_chart(helm, values_files=[values]), tmp_path / "conf")
    res = gw.validate(otelcol_bin)
    assert res.returncode == 0, res.stderr
    assert len(gw.files) > 1          # at least one backend file beside gateway.yaml


# -- NOTES.txt -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def notes(helm, tmp_path_factory):
    """render_notes(values, values_files) -> NOTES.txt as `helm install` prints it.
    (`helm template` leaves NOTES out; a copy of the chart with one extra template
    that includes it renders it offline.)"""
    chart = tmp_path_factory.mktemp("chart") / "otel-mta"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        'kind: RenderedNotes\ntext: {{ include (print $.Template.BasePath "/NOTES.txt") . | toJson }}\n')

    def render_notes(values: dict | None = None, values_files=()) -> str:
        docs = render_chart(helm, values, values_files, chart=chart)
        return next(d for d in docs if d["kind"] == "RenderedNotes")["text"]
    return render_notes


def test_notes_of_a_fresh_install_say_what_to_switch_on(notes):
    text = notes()
    for signal in ALL_SIGNALS:
        assert f"{signal:<8} -> NOT EXPORTED" in text
    assert "No backend is switched on" in text
    assert "--set gateway.backends.jaeger.enabled=true" in text and "docs/backends.md" in text


def test_notes_name_each_signals_backends_and_endpoints(notes):
    text = notes(values_files=[PROFILES / "victoria-jaeger.yaml"],
                 values={"gateway.backends.clickhouse.enabled": "true"})
    assert "traces   -> clickhouse, jaeger" in text
    assert "logs     -> clickhouse, victorialogs" in text
    assert "metrics  -> clickhouse, victoriametrics" in text
    assert "jaeger at jaeger-collector.observability:4317" in text
    assert "No backend is switched on" not in text and "NOT EXPORTED" not in text
    only_traces = notes({"gateway.backends.jaeger.enabled": "true"})
    assert "logs     -> NOT EXPORTED" in only_traces and "traces   -> jaeger" in only_traces


def test_helm_lint_accepts_every_profile(helm):
    for profile in PROFILES.glob("*.yaml"):
        res = subprocess.run([helm, "lint", str(CHART), "--strict", "-f", str(profile)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("values,message", [
    ({"gateway.backends.otlp.enabled": "true", "gateway.backends.otlp.endpoint": '"https://vendor:4317"'},
     "with protocol grpc give host:port"),
    ({"gateway.backends.otlp.enabled": "true", "gateway.backends.otlp.protocol": '"http/protobuf"',
      "gateway.backends.otlp.endpoint": '"vendor:4318"'}, "with protocol http/protobuf give a URL"),
    ({"gateway.backends.jaeger.endpoint": '"http://jaeger:4317"'}, "at '/gateway/backends/jaeger/endpoint'"),
    ({"gateway.backends.jaeger.secretHeaders": '{"Authorization": {"secret": "x"}}'}, "missing property 'key'"),
    ({"gateway.backends.kafka": '{"enabled": true}'}, "additional properties 'kafka' not allowed"),
])
def test_bad_backend_values_are_refused_with_a_clear_message(render, values, message):
    res = render(values, check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr
