#!/usr/bin/env bash
# Build the first-party plugins and the test fixture plugins for wasm32-wasip2.
# Output: plugins/target/wasm32-wasip2/release/*.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# From inside plugins/, so cargo reads plugins/.cargo/config.toml (the wasm target flags:
# SIMD). A RUSTFLAGS in the environment replaces those flags; the plugins still work, slower.
cd plugins
cargo build --quiet --release --target wasm32-wasip2
