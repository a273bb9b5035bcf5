#!/usr/bin/env bash
# Build this plugin into a component: build.sh [OUT.wasm]
#
# OUT defaults to target/js-plugins/compliance_js.wasm at the root of the payproxy checkout
# this directory is in. The contract is that checkout's wit/payproxy-plugin@0.4.0; for a
# copy outside a checkout, set PAYPROXY_WIT to it (and give OUT).
#
# Installs componentize-js (package-lock.json: exact versions) with `npm ci` into a build
# directory (JS_PLUGIN_BUILD_DIR; default target/js-plugin-build of the checkout), copies
# the source there and builds there: nothing is written here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="${PAYPROXY_WIT:-$root/wit/payproxy-plugin@0.4.0}"
if [ ! -f "$wit/roles.wit" ]; then
  echo "build.sh: no payproxy contract at $wit: set PAYPROXY_WIT to wit/payproxy-plugin@0.4.0 of a payproxy checkout" >&2
  exit 2
fi
if [ -z "${1:-}" ] && [ -z "${PAYPROXY_WIT:-}" ]; then
  out="$root/target/js-plugins/compliance_js.wasm"
  build="${JS_PLUGIN_BUILD_DIR:-$root/target/js-plugin-build}"
else
  out="${1:?build.sh: give the output file (OUT.wasm) when PAYPROXY_WIT is set}"
  build="${JS_PLUGIN_BUILD_DIR:-$(dirname "$out")/js-plugin-build}"
fi
mkdir -p "$build" "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
trap 'rm -f "$out.tmp"' EXIT
# installed.lock: the lock `npm ci` last completed with (written only after it succeeded).
if ! cmp -s "$here/package-lock.json" "$build/installed.lock"; then
  rm -f "$build/installed.lock"
  cp "$here/package.json" "$here/package-lock.json" "$build/"
  (cd "$build" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$build/installed.lock"
fi
cp "$here/app.js" "$here/build.mjs" "$build/"
# From the build directory: componentize-js resolves the source against the working one.
(cd "$build" && node build.mjs "$out.tmp" "$wit" </dev/null)
mv "$out.tmp" "$out"
