"""collector-config/ without Helm: gateway.yaml plus one file per backend, composed
with several --config flags, as collector-config/README.md tells an operator to.
The Collector's own `print-config` shows what a composition amounts to."""
from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml
from tests.collector.otelcol_harness import CONFIG_DIR

README = (CONFIG_DIR / "README.md").read_text()
ENV = {"PATH": "/usr/bin:/bin"}


def _run(otelcol_bin, command, configs):
    return subprocess.run([str(otelcol_bin), command, *[f"--config={c}" for c in configs]],
                          capture_output=True, text=True, env=ENV, cwd=CONFIG_DIR, timeout=60)


def effective(otelcol_bin, configs) -> dict:
    res = _run(otelcol_bin, "print-config", configs)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def _readme_commands() -> list[list[str]]:
    """Every `$bin [validate|print-config] --config=...` line of the README, as its config list."""
    out = []
    for line in README.splitlines():
        if line.startswith("$bin ") and "--config=gateway.yaml" in line:
            out.append([a.split("=", 1)[1] for a in shlex.split(line.split("#")[0]) if a.startswith("--config=")])
    return out


def test_the_readme_shows_every_backend_file():
    shown = {c for cmd in _readme_commands() for c in cmd}
    assert {p.relative_to(CONFIG_DIR).as_posix() for p in (CONFIG_DIR / "backends").glob("*.yaml")} - shown \
        <= {"backends/otlp-grpc.yaml", "backends/otlp-http.yaml"}   # the generic ones are in the table
    for name in ("otlp-grpc", "otlp-http"):
        assert f"`{name}`" in README


@pytest.mark.parametrize("configs", _readme_commands(), ids=lambda c: "+".join(c))
def test_every_command_in_the_readme_validates(otelcol_bin, configs):
    res = _run(otelcol_bin, "validate", configs)
    assert res.returncode == 0, res.stderr


def test_two_backends_of_one_signal_both_get_it(otelcol_bin):
    cfg = effective(otelcol_bin, ["gateway.yaml", "backends/clickhouse.yaml", "backends/jaeger.yaml",
                                  "backends/tempo.yaml"])
    pipes = cfg["service"]["pipelines"]
    fed = {name: p["exporters"] for name, p in pipes.items() if p["receivers"] == ["forward/traces"]}
    assert fed == {"traces/discard": ["nop"], "traces/clickhouse": ["clickhouse"],
                   "traces/jaeger": ["otlp_grpc/jaeger"], "traces/tempo": ["otlp_grpc/tempo"]}
    # logs and metrics only to ClickHouse: Jaeger and Tempo take traces alone
    assert {n for n, p in pipes.items() if p["receivers"] == ["forward/logs"]} == {"logs/discard", "logs/clickhouse"}


def test_the_gateway_alone_discards_every_signal(otelcol_bin):
    cfg = effective(otelcol_bin, ["gateway.yaml"])
    assert set(cfg["exporters"]) == {"nop"}
    for signal in ("traces", "logs", "metrics"):
        discard = cfg["service"]["pipelines"][f"{signal}/discard"]
        assert (discard["receivers"], discard["exporters"]) == ([f"forward/{signal}"], ["nop"])


def test_a_backend_file_alone_is_not_a_config(otelcol_bin):
    res = _run(otelcol_bin, "validate", ["backends/jaeger.yaml"])
    assert res.returncode != 0


def test_the_readme_headers_overlay(otelcol_bin, tmp_path):
    block = re.search(r"```yaml\n(# my-headers\.yaml.*?)```", README, re.S).group(1)
    overlay = tmp_path / "my-headers.yaml"
    overlay.write_text(block)
    configs = ["gateway.yaml", "backends/victorialogs.yaml", str(overlay)]
    res = subprocess.run([str(otelcol_bin), "print-config", "--mode=unredacted",
                          *[f"--config={c}" for c in configs]], capture_output=True, text=True, cwd=CONFIG_DIR,
                         env={**ENV, "VICTORIALOGS_ENDPOINT": "http://vl:9428",
                              "VICTORIALOGS_AUTHORIZATION": "Basic dXNlcjpwdw=="}, timeout=60)
    assert res.returncode == 0, res.stderr
    exp = yaml.safe_load(res.stdout)["exporters"]["otlp_http/victorialogs"]
    assert {h["name"]: h["value"] for h in exp["headers"]} == {"AccountID": "12", "Authorization": "Basic dXNlcjpwdw=="}
    assert exp["logs_endpoint"] == "http://vl:9428/insert/opentelemetry/v1/logs"
