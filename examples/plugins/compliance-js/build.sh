#!/usr/bin/env bash
# Build this plugin into a component: build.sh [OUT.wasm] (default
# target/js-plugins/compliance_js.wasm at the repository's root).
#
# Installs componentize-js (package-lock.json: exact versions) with `npm ci` into a build
# directory under target/ (JS_PLUGIN_BUILD_DIR to choose another), copies the source there
# and builds: nothing is written here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/js-plugins/compliance_js.wasm}"
build="${JS_PLUGIN_BUILD_DIR:-$root/target/js-plugin-build}"
mkdir -p "$build" "$(dirname "$out")"
trap 'rm -f "$out.tmp"' EXIT
# installed.lock: the lock `npm ci` last completed with (written only after it succeeded).
if ! cmp -s "$here/package-lock.json" "$build/installed.lock"; then
  rm -f "$build/installed.lock"
  cp "$here/package.json" "$here/package-lock.json" "$build/"
  (cd "$build" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$build/installed.lock"
fi
cp "$here/app.js" "$here/build.mjs" "$build/"
node "$build/build.mjs" "$out.tmp" "$root/wit/payproxy-plugin@0.4.0" </dev/null
mv "$out.tmp" "$out"
