#!/usr/bin/env bash
# The test command: everything a fresh clone needs, then every test.
#   1. the wasm32-wasip2 target and the plugins (first-party + test fixtures) as components
#   2. plugin logic natively (same fixtures the host tests run through wasm)
#   3. the workspace: unit, integration and end-to-end tests (nextest when available)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building plugins for wasm32-wasip2"
scripts/build-plugins.sh

echo "==> plugin tests (native)"
cargo test --quiet --manifest-path plugins/Cargo.toml

echo "==> workspace tests"
cargo build --quiet -p payproxy --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
