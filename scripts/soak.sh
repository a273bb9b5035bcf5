#!/usr/bin/env bash
# Soaks: payproxy's RSS over 1,000 reloads under load (plugin binaries and configs
# alternating) and with 2,000 idle keep-alive connections. Installs what it needs (nginx,
# wrk), builds payproxy (release) and the plugins, and writes a markdown report to stdout
# (and target/soak/results.md). About 3 minutes.
#
#   scripts/soak.sh
#   SOAK_RELOADS=200 SOAK_IDLE=500 scripts/soak.sh
#
# Everything listens on 127.0.0.1 only; every loop is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/load-tools.sh
need_tools wrk:wrk nginx:nginx-light taskset:util-linux

echo "==> building plugins and payproxy (release)" >&2
scripts/build-plugins.sh
cargo build --quiet --release -p payproxy

exec python3 scripts/soak.py "$@"
