#!/usr/bin/env bash
# Build the Helm CLI from its Go module into .cache/helm/<version>/helm and
# print its path. Cached: a second run returns at once. Cold: about 2 min.
set -euo pipefail
HELM_VERSION=v3.22.0
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.cache/helm/$HELM_VERSION"
if [[ ! -x "$dir/helm" ]]; then
  command -v go >/dev/null || { echo "install-helm.sh: Go is required" >&2; exit 1; }
  mkdir -p "$dir"
  exec 9>"$dir.lock"
  flock 9
  if [[ ! -x "$dir/helm" ]]; then
    echo "install-helm.sh: building helm $HELM_VERSION from Go modules" >&2
    GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0 GOBIN="$dir" \
      go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  fi
fi
echo "$dir/helm"
