#!/usr/bin/env bash
# The test command: everything a fresh clone needs, then every test.
#   1. the wasm32-wasip2 target and the plugins (first-party + test fixtures) as components
#   2. plugin logic natively (same fixtures the host tests run through wasm with
#      `payproxy plugin test`: proxy/tests/plugin_goldens.rs finds every plugins/*/fixtures/;
#      proxy/tests/plugin_new.rs scaffolds, builds and tests a plugin of each role)
#   3. the workspace: unit, integration and end-to-end tests (nextest when available), with
#      a throwaway PostgreSQL on loopback (installed from Debian packages if missing) for the
#      postgres store's conformance and multi-instance tests: PAYPROXY_TEST_POSTGRES_URL
#      names it, and with it set those tests fail, never skip, when it is unreachable
#   4. the official Stripe Python and Node.js SDKs against two localstripe servers
#      (third-party fake Stripe), straight and through payproxy (tests/stripe_sdk; creates
#      its own venv and node_modules under target/; Node.js >= 20 with npm); through
#      payproxy with the compliance plugins of examples/plugins/ written in Python and
#      JavaScript in the route, which it builds (componentize-py from its venv's pins,
#      componentize-js by npm ci under target/)
#   5. the Grafana dashboard and the alert rules against a real Prometheus scraping payproxy
#      (tests/dashboard; Debian package prometheus, installed when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building plugins for wasm32-wasip2"
scripts/build-plugins.sh

# A failure in one part does not hide the other's results: both run, and the script fails
# at the end if either did.
failed=()

echo "==> plugin tests (native)"
cargo test --quiet --manifest-path plugins/Cargo.toml --no-fail-fast || failed+=("plugin tests (native)")

echo "==> PostgreSQL for the shared-store tests"
source scripts/postgres.sh
pg_dir=$(mktemp -d /tmp/payproxy-test-pg.XXXXXX)
trap 'pg_stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
if pg_install && pg_start "$pg_dir"; then
    export PAYPROXY_TEST_POSTGRES_URL=$PG_URL PAYPROXY_TEST_POSTGRES_BIN=$PG_BIN
    echo "    $PG_URL ($PG_BIN)"
else
    # The variable is set anyway: the postgres tests then fail and say why.
    export PAYPROXY_TEST_POSTGRES_URL=postgres://payproxy@127.0.0.1:1/unavailable
    failed+=("PostgreSQL setup")
fi

echo "==> workspace tests"
built=1
if ! cargo build --quiet -p payproxy -p provider-sim --bins; then
    failed+=("payproxy build")
    built=0
elif cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast || failed+=("workspace tests")
else
    cargo test --workspace --no-fail-fast || failed+=("workspace tests")
fi

echo "==> official Stripe SDK through payproxy (localstripe providers)"
# The suite needs python3 with venv: it creates its own venv and installs from PyPI.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "==> installing python3 and python3-venv (Debian packages)"
    { apt-get update -qq && apt-get install -y -qq python3 python3-venv; } >/dev/null ||
        echo "could not install python3-venv; the Stripe SDK suite will say why it cannot run" >&2
fi
# The stripe-node suite needs Node.js >= 20 with npm (the machine's; Debian's nodejs when missing).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "==> installing nodejs and npm (Debian packages)"
    { apt-get update -qq && apt-get install -y -qq nodejs npm; } >/dev/null ||
        echo "could not install nodejs and npm; the Stripe SDK suite will say why it cannot run" >&2
fi
if ((built)); then
    python3 tests/stripe_sdk/run.py --payproxy target/debug/payproxy \
        --provider-sim target/debug/provider-sim || failed+=("Stripe SDK suite")
else
    failed+=("Stripe SDK suite (not run: no payproxy build)")
fi

echo "==> Grafana dashboard and alert rules against a real Prometheus (tests/dashboard)"
# The Debian package prometheus (with promtool); only its binaries are used. No service may
# start from the install: policy-rc.d refuses every start meanwhile (when the machine has no
# policy of its own), and on a systemd machine the unit is left disabled.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "==> installing prometheus (Debian package, no service started)"
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [[ ! -e $policy ]] && printf '#!/bin/sh\nexit 101\n' 2>/dev/null >"$policy"; then
        chmod +x "$policy" && added_policy=1
    fi
    { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null ||
        echo "could not install prometheus; the observability check will say why it cannot run" >&2
    if ((added_policy)); then rm -f "$policy"; fi
    if [[ -d /run/systemd/system ]]; then systemctl disable --now --quiet prometheus 2>/dev/null || true; fi
fi
if ((built)); then
    python3 tests/dashboard/run.py --payproxy target/debug/payproxy \
        --provider-sim target/debug/provider-sim || failed+=("observability (dashboard and alerts)")
else
    failed+=("observability (not run: no payproxy build)")
fi

if ((${#failed[@]})); then
    printf '==> FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "==> all tests passed"
