#!/usr/bin/env bash
# Copy what `python -m monitoring` generates (monitoring/generated/: the rule
# files, and the dashboards when present) into the chart, where Helm's .Files
# can read them. `make monitoring` runs it; tests/helm fails when the copies differ.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rm -rf "$root/helm/otel-mta/files/monitoring"
mkdir -p "$root/helm/otel-mta/files"
cp -r "$root/monitoring/generated" "$root/helm/otel-mta/files/monitoring"
