"""The Collector configuration the chart renders passes the built Collector's `validate`."""
from __future__ import annotations

import subprocess

import pytest
from tests.collector.otelcol_harness import build_collector
from test_chart import COMBOS

GATEWAY_COMBOS = [c for c in COMBOS if c != "no-gateway"]


@pytest.fixture(scope="session")
def otelcol_bin():
    return build_collector()


def validate_deployment(otelcol_bin, docs, name, tmp_path):
    """Write the Deployment's ConfigMap to disk and run the Collector's validate
    with the Deployment's own arguments and literal environment."""
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    pod = dep["spec"]["template"]["spec"]
    cm_name = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "config")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    conf = tmp_path / name
    conf.mkdir()
    for fname, text in cm["data"].items():
        (conf / fname).write_text(text)
    (c,) = pod["containers"]
    args = [a.replace("/conf/", f"{conf}/") for a in c["args"]]
    env = {"PATH": "/usr/bin:/bin", **{e["name"]: e["value"] for e in c["env"] if "value" in e}}
    return subprocess.run([str(otelcol_bin), "validate", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("combo", GATEWAY_COMBOS)
def test_rendered_gateway_config_validates(render, otelcol_bin, tmp_path, combo):
    docs = render(COMBOS[combo])
    res = validate_deployment(otelcol_bin, docs, "rel-otel-mta-gateway", tmp_path)
    assert res.returncode == 0, res.stderr


def test_rendered_loadbalancer_config_validates(render, otelcol_bin, tmp_path):
    docs = render(COMBOS["tail-sampling-scale-out"])
    res = validate_deployment(otelcol_bin, docs, "rel-otel-mta-loadbalancer", tmp_path)
    assert res.returncode == 0, res.stderr


def test_a_bad_extra_config_fails_validation(render, otelcol_bin, tmp_path):
    # The schema lets extraConfig through (it is free-form): the Collector must catch it.
    docs = render({"gateway.extraConfig": '{"processors": {"batch": {"timout": "5s"}}}'})
    res = validate_deployment(otelcol_bin, docs, "rel-otel-mta-gateway", tmp_path)
    assert res.returncode != 0
    assert "timout" in res.stderr
