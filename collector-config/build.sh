#!/usr/bin/env bash
# Build the otel-mta Collector distribution from manifest.yaml with the
# OpenTelemetry Collector builder (ocb), both from Go modules.
#
#   collector-config/build.sh        # prints the binary's path on stdout
#
# The binary is cached in .cache/otelcol/<key>/otelcol-mta, where <key> hashes
# the manifest, the builder version and the Go version: an unchanged manifest
# is never rebuilt. Cold (empty Go module and build caches), 2 cores: about
# 6 minutes and 4.4 GB of Go caches; with warm Go caches about 20 s.
set -euo pipefail

OCB_VERSION=v0.161.0   # keep equal to the core component versions in manifest.yaml

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
manifest="$here/manifest.yaml"
cache="$root/.cache/otelcol"

command -v go >/dev/null || { echo "build.sh: Go is required (go command not found)" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

key="$( { cat "$manifest"; echo "$OCB_VERSION"; go env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-16)"
out="$cache/$key"
bin="$out/otelcol-mta"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
# One build at a time (parallel test workers, CI steps).
exec 9>"$cache/.build.lock"
flock 9
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

ocb_dir="$cache/tools/ocb-$OCB_VERSION"
if [[ ! -x "$ocb_dir/builder" ]]; then
  echo "build.sh: installing ocb $OCB_VERSION" >&2
  GOBIN="$ocb_dir" go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION" >&2
fi

work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# ocb writes sources and binary to dist.output_path: point it at the work dir.
sed "s#^dist:#dist:\n  output_path: $work/src#" "$manifest" > "$work/manifest.yaml"
echo "build.sh: building the Collector (key $key), this takes a few minutes" >&2
start=$SECONDS
"$ocb_dir/builder" --config="$work/manifest.yaml" >&2
"$work/src/otelcol-mta" --version >&2
rm -rf "$out"
mkdir -p "$out"
cp "$manifest" "$out/manifest.yaml"
mv "$work/src/otelcol-mta" "$bin"
echo "build.sh: built in $((SECONDS - start)) s" >&2
echo "$bin"
