#!/usr/bin/env bash
# Copy the Collector pipelines the chart deploys from collector-config/ (the
# canonical files) into the chart, where Helm's .Files can read them.
# tests/helm/test_chart.py fails when the copies differ.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/helm/otel-mta/files/collector"
for f in gateway.yaml tail-sampling.yaml loadbalancer.yaml; do
  cp "$root/collector-config/$f" "$dest/$f"
done
rm -rf "$dest/backends"
mkdir -p "$dest/backends"
cp "$root"/collector-config/backends/*.yaml "$dest/backends/"
