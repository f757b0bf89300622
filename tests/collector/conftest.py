"""Fixtures that run the real otel-mta Collector (built by collector-config/build.sh).

`otelcol_bin`   path of the built binary (OTELCOL_BIN overrides; else build.sh,
                which returns at once when the binary is cached).
`otelcol`       factory: `otelcol(["local.yaml", ...], env={...})` starts the
                Collector on free loopback ports and returns a `Collector`;
                every Collector started is stopped (SIGTERM) after the test.

The sidecar end-to-end test reuses these: start `local.yaml`, point the
sidecar's OTEL_EXPORTER_OTLP_ENDPOINT at `col.grpc_endpoint`, and read
`col.records("traces")`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from otelcol_harness import Collector, build_collector, start_collector


@pytest.fixture(scope="session")
def otelcol_bin() -> Path:
    return build_collector()


@pytest.fixture
def otelcol(otelcol_bin, tmp_path):
    started: list[Collector] = []

    def start(configs, env: dict | None = None, sets: list[str] | None = None) -> Collector:
        col = start_collector(otelcol_bin, tmp_path / f"otelcol-{len(started) + 1}", configs, env, sets)
        started.append(col)
        return col

    yield start
    for col in started:
        col.stop()
