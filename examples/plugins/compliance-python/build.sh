#!/usr/bin/env bash
# Build this plugin into a component: build.sh [OUT.wasm]
#
# OUT defaults to target/python-plugins/compliance_python.wasm at the root of the payproxy
# checkout this directory is in. The contract is that checkout's wit/payproxy-plugin@0.4.0;
# for a copy outside a checkout, set PAYPROXY_WIT to it (and give OUT).
#
# Needs componentize-py (pip install componentize-py==0.25.1; COMPONENTIZE_PY names the
# command if it is not on PATH). The source is copied to a temporary directory first, so
# the build leaves no __pycache__ here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="${PAYPROXY_WIT:-$root/wit/payproxy-plugin@0.4.0}"
if [ ! -f "$wit/roles.wit" ]; then
  echo "build.sh: no payproxy contract at $wit: set PAYPROXY_WIT to wit/payproxy-plugin@0.4.0 of a payproxy checkout" >&2
  exit 2
fi
if [ -z "${1:-}" ] && [ -z "${PAYPROXY_WIT:-}" ]; then
  out="$root/target/python-plugins/compliance_python.wasm"
else
  out="${1:?build.sh: give the output file (OUT.wasm) when PAYPROXY_WIT is set}"
fi
componentize="${COMPONENTIZE_PY:-componentize-py}"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$out.tmp"' EXIT
cp "$here/app.py" "$work/"
mkdir -p "$(dirname "$out")"
"$componentize" -d "$wit" -w compliance-plugin componentize -p "$work" app -o "$out.tmp" </dev/null
mv "$out.tmp" "$out"
echo "built $out"
