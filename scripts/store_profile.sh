#!/usr/bin/env bash
# What a durable payment costs the redb store, in counts that move far less with the machine
# than throughput: payments per fsync, page writes (pwrite calls) and context switches per
# payment, CPU used, beside payments/s, for the memory store and redb at 64 and 256
# connections, a fresh payproxy and store for each run (scripts/store_profile.py says more).
# Installs what it needs (nginx, wrk, perf) and builds the plugins; the binary is yours
# (default target/release/payproxy):
#
#   cargo build --release -p payproxy && scripts/store_profile.sh
#   PROFILE_ROUNDS=5 PROFILE_CONNS=64 scripts/store_profile.sh /tmp/pp-after
#
# Everything listens on 127.0.0.1 only; every load run is bounded by PROFILE_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/load-tools.sh
need_tools wrk:wrk nginx:nginx-light taskset:util-linux perf:linux-perf

echo "==> building plugins" >&2
scripts/build-plugins.sh

exec python3 scripts/store_profile.py "$@"
