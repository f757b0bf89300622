#!/usr/bin/env bash
# Copy the Collector pipelines the chart deploys from collector-config/ (the
# canonical files) into the chart, where Helm's .Files can read them.
# tests/helm/test_chart.py fails when the copies differ.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for f in gateway.yaml tail-sampling.yaml loadbalancer.yaml; do
  cp "$root/collector-config/$f" "$root/helm/otel-mta/files/collector/$f"
done
