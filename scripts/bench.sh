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

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "==> installing ${missing[*]}" >&2
    { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"; } >/dev/null
fi

echo "==> building plugins and payproxy (release)" >&2
scripts/build-plugins.sh
cargo build --quiet --release -p payproxy

exec python3 scripts/bench.py "$@"
