#!/usr/bin/env bash
# Build the bench-only Collector (manifest.yaml here) with ocb from Go modules;
# cached in .cache/otelcol-bench/<hash>/ like collector-config/build.sh.
# Prints the binary's path. Cold: several minutes and GBs of Go caches.
set -euo pipefail
OCB_VERSION=v0.165.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$root/.cache/otelcol-bench"
command -v go >/dev/null || { echo "build.sh: Go is required" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0
key="$( { cat "$here/manifest.yaml"; echo "$OCB_VERSION"; go env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-16)"
bin="$cache/$key/otelcol-udplog-bench"
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi
ocb="$cache/tools/ocb-$OCB_VERSION/builder"
if [[ ! -x "$ocb" ]]; then
  GOBIN="$(dirname "$ocb")" go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION" >&2
fi
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
sed "s#^dist:#dist:\n  output_path: $work/src#" "$here/manifest.yaml" > "$work/manifest.yaml"
"$ocb" --config="$work/manifest.yaml" >&2
mkdir -p "$(dirname "$bin")"
mv "$work/src/otelcol-udplog-bench" "$bin"
echo "$bin"
