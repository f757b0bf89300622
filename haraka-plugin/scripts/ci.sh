#!/bin/sh
# Install the plugin's dev dependencies (scripts/install.sh) and run its tests
# against a real Haraka 3.3.4. BENCH=1 also runs the hook-cost bench.
set -eu
cd "$(dirname "$0")/.."
repo_root=$(cd .. && pwd)

# Haraka 3.3 needs Node >= 20; where the system's is older (Debian 12 has 18),
# the test stack's Node (tests/stack/setup.sh, `make setup-stack`) runs it.
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
    . "$repo_root/tests/stack/versions.env"
    arch=$(uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')
    PATH="$repo_root/.cache/node/$NODE_VERSION/node_modules/node-linux-$arch/bin:$PATH"
    export PATH
fi

scripts/install.sh
npm test
if [ "${BENCH:-0}" = 1 ]; then
    npm run bench
fi
