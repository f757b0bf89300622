#!/usr/bin/env bash
# Build the test backends from their Go modules and print the binary's path.
#
#   tools/backends.sh prometheus|promtool|victoria-metrics|vmalert|victoria-logs|jaeger
#
# Each binary is cached in .cache/backends/<name>-<version>-<go version>/, so a
# second call returns at once. Prometheus and promtool are built with the tag
# remove_all_sd (Prometheus' own switch): no cloud service discovery (AWS,
# Azure, GCE, ...), which the tests never use: 179 modules instead of 242,
# 0.9 GB of module source instead of 1.6 GB, binaries of 75 MB instead of 147.
# Build times (cold and warm Go caches) are in docs/backends.md.
# The versions are pinned here and nowhere else.
set -euo pipefail

PROMETHEUS_VERSION=v0.316.0        # Prometheus 3.x's Go module version
VICTORIAMETRICS_VERSION=v1.151.0
VICTORIALOGS_VERSION=v1.52.1
JAEGER_VERSION=v1.76.0             # the module that holds Jaeger v2's cmd/jaeger

name="${1:?usage: tools/backends.sh prometheus|promtool|victoria-metrics|vmalert|victoria-logs|jaeger}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v go >/dev/null || { echo "backends.sh: Go is required (go command not found)" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0

tags=""
case "$name" in
  prometheus|promtool) version=$PROMETHEUS_VERSION; pkg="github.com/prometheus/prometheus/cmd/$name"; tags=remove_all_sd ;;
  victoria-metrics) version=$VICTORIAMETRICS_VERSION; pkg="github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics" ;;
  vmalert) version=$VICTORIAMETRICS_VERSION; pkg="github.com/VictoriaMetrics/VictoriaMetrics/app/vmalert" ;;
  victoria-logs) version=$VICTORIALOGS_VERSION; pkg="github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs" ;;
  jaeger) version=$JAEGER_VERSION; pkg="" ;;
  *) echo "backends.sh: unknown backend $name" >&2; exit 2 ;;
esac

dir="$root/.cache/backends/$name-$version${tags:+-$tags}-$(go env GOVERSION)"
bin="$dir/$name"
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi
mkdir -p "$root/.cache/backends"
exec 9>"$root/.cache/backends/.build.lock"   # one Go build at a time: 2 cores
flock 9
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi

start=$SECONDS
echo "backends.sh: building $name $version from Go modules (cached afterwards)" >&2
tmp="$(mktemp -d "$root/.cache/backends/build.XXXXXX")"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
if [[ -n "$pkg" ]]; then
  GOBIN="$tmp" go install ${tags:+-tags "$tags"} "$pkg@$version" >&2
else
  # `go install` refuses Jaeger (its go.mod has replace directives): build
  # inside a copy of the downloaded module instead.
  src="$(go mod download -json "github.com/jaegertracing/jaeger@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  cp -r "$src" "$tmp/src"
  chmod -R u+w "$tmp/src"
  (cd "$tmp/src" && go build -o "$tmp/jaeger" ./cmd/jaeger) >&2
fi
rm -rf "$dir"
mkdir -p "$dir"
mv "$tmp/$name" "$bin"
echo "backends.sh: built $name in $((SECONDS - start)) s" >&2
echo "$bin"
