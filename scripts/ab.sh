#!/usr/bin/env bash
# A/B of two payproxy builds in one run, alternating rounds: transparent route, router plugin,
# payment chain (memory store), unique keys on the redb store and the chain translated to
# Adyen JSON and to DANA XML, req/s and the ratio (AB_ONLY=text: only the paths named so).
# Installs what it needs (nginx, wrk) and builds the plugins; the two binaries are yours:
#
#   git stash && cargo build --release -p payproxy && cp target/release/payproxy /tmp/pp-before
#   git stash pop && cargo build --release -p payproxy
#   scripts/ab.sh /tmp/pp-before target/release/payproxy
#   AB_ROUNDS=5 AB_SECONDS=5 scripts/ab.sh ...    # more rounds for a small difference
#
# Two builds of the plugins: AB_PLUGINS_BEFORE=/tmp/old-plugins (a copy of an earlier
# plugins/target/wasm32-wasip2/release) with the same binary twice. AB_PLUGINS_AFTER
# defaults to the plugins this script builds.
#
# Everything listens on 127.0.0.1 only; every load run is bounded by AB_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/load-tools.sh
need_tools wrk:wrk nginx:nginx-light taskset:util-linux

echo "==> building plugins" >&2
scripts/build-plugins.sh

exec python3 scripts/ab.py "$@"
