#!/usr/bin/env bash
# Build this plugin into a component: build.sh [OUT.wasm] (default
# target/python-plugins/compliance_python.wasm at the repository's root).
#
# Needs componentize-py (pip install componentize-py==0.25.1). The source is copied to a
# temporary directory first, so the build leaves no __pycache__ here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/python-plugins/compliance_python.wasm}"
componentize="${COMPONENTIZE_PY:-componentize-py}"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$out.tmp"' EXIT
cp "$here/app.py" "$work/"
mkdir -p "$(dirname "$out")"
"$componentize" -d "$root/wit/payproxy-plugin@0.4.0" -w compliance-plugin \
  componentize -p "$work" app -o "$out.tmp" </dev/null
mv "$out.tmp" "$out"
echo "built $out"
