#!/usr/bin/env bash
# Side-by-side benchmark: direct, nginx, HAProxy and payproxy (transparent, router plugin,
# payment chains) against one canned nginx upstream, in one run, alternating rounds.
# Installs what it needs (nginx, HAProxy, wrk, h2load), builds payproxy (release) and the
# plugins, and writes a markdown table to stdout (and target/bench/results.md).
#
#   scripts/bench.sh                 # 3 rounds of 5 s per measurement
#   BENCH_ROUNDS=1 BENCH_SECONDS=3 scripts/bench.sh
#
# Everything listens on 127.0.0.1 only; every load run is bounded by BENCH_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/load-tools.sh
need_tools wrk:wrk nginx:nginx-light haproxy:haproxy h2load:nghttp2-client taskset:util-linux

echo "==> building plugins and payproxy (release)" >&2
scripts/build-plugins.sh
cargo build --quiet --release -p payproxy

exec python3 scripts/bench.py "$@"
