#!/bin/sh
# Install the plugin's dev dependencies (only when package-lock.json changed)
# and run its tests. BENCH=1 also runs the hook-cost bench.
# npm's download cache lives in <repo>/.cache/npm (git-ignored).
set -eu
cd "$(dirname "$0")/.."
repo_root=$(cd .. && pwd)
export npm_config_cache="$repo_root/.cache/npm"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

lock_hash=$( (node --version; cat package-lock.json .npmrc) | sha256sum | cut -d' ' -f1)
stamp=node_modules/.otel-mta-lock-hash
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    npm ci
    echo "$lock_hash" > "$stamp"
fi

npm test
if [ "${BENCH:-0}" = 1 ]; then
    npm run bench
fi
