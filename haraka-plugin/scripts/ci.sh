#!/bin/sh
# Install the plugin's dev dependencies (Haraka 3.3.4 from npm, ajv; only when
# package-lock.json changed) and run its tests. BENCH=1 also runs the hook-cost
# bench. npm's download cache lives in <repo>/.cache/npm (git-ignored).
# Haraka's optional dependencies (its npm plugins) and install scripts are
# left out: the tests use Haraka's core and its bundled plugins only.
set -eu
cd "$(dirname "$0")/.."
repo_root=$(cd .. && pwd)
export npm_config_cache="$repo_root/.cache/npm"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

# Haraka 3.3 needs Node >= 20; Debian's may be older: then the test stack's Node
# (tests/stack/setup.sh, `make setup-stack`) runs it.
node_bin=node
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
    . "$repo_root/tests/stack/versions.env"
    arch=$(uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')
    node_bin="$repo_root/.cache/node/$NODE_VERSION/node_modules/node-linux-$arch/bin/node"
    export PATH="$(dirname "$node_bin"):$PATH"
fi

lock_hash=$( ("$node_bin" --version; cat package-lock.json) | sha256sum | cut -d' ' -f1)
stamp=node_modules/.otel-mta-lock-hash
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    npm ci --omit=optional --ignore-scripts --loglevel=error
    echo "$lock_hash" > "$stamp"
fi

npm test
if [ "${BENCH:-0}" = 1 ]; then
    npm run bench
fi
