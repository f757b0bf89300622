#!/usr/bin/env bash
# Copy the generated dashboards and rules (monitoring/generated/, made by
# `python -m monitoring`) into the chart, where Helm's .Files can read them.
# tests/helm/test_monitoring.py fails when the copies differ.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rm -rf "$root/helm/otel-mta/files/monitoring"
mkdir -p "$root/helm/otel-mta/files/monitoring"
cp -r "$root/monitoring/generated/." "$root/helm/otel-mta/files/monitoring/"
