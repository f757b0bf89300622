#!/bin/sh
# Install the plugin's dev dependencies (Haraka 3.3.4 from npm, ajv) when
# package-lock.json changed: the plugin's tests (scripts/ci.sh) and the
# end-to-end tests (tests/stack, tests/inbound) run this Haraka.
# Haraka's optional dependencies (its npm plugins) and install scripts are
# left out: the tests use Haraka's core and its bundled plugins only.
# npm's download cache lives in <repo>/.cache/npm (git-ignored).
set -eu
cd "$(dirname "$0")/.."
repo_root=$(cd .. && pwd)
export npm_config_cache="$repo_root/.cache/npm"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

lock_hash=$(cat package-lock.json | sha256sum | cut -d' ' -f1)
stamp=node_modules/.otel-mta-lock-hash
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    npm ci --omit=optional --ignore-scripts --loglevel=error
    echo "$lock_hash" > "$stamp"
fi
