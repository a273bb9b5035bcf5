#!/usr/bin/env bash
# The demo: build, start the provider simulator and payproxy with examples/config/demo.json,
# send sample traffic showing plugin-routed payments, then keep running (Ctrl-C stops both).
#   scripts/demo.sh          # keep running after the sample traffic
#   scripts/demo.sh --exit   # exit after the sample traffic
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP_RUNNING=1
[[ "${1:-}" == "--exit" ]] && KEEP_RUNNING=0

PROXY_URL=http://127.0.0.1:8080
ADMIN_URL=http://127.0.0.1:9901

echo "==> building plugins and binaries"
scripts/build-plugins.sh
cargo build --quiet -p payproxy -p provider-sim

target/debug/payproxy check --config examples/config/demo.json

LOGS=$(mktemp -d)
target/debug/provider-sim >"$LOGS/sim.out" 2>"$LOGS/sim.log" &
SIM=$!
PAYPROXY_LOG=${PAYPROXY_LOG:-info} target/debug/payproxy run --config examples/config/demo.json 2>"$LOGS/payproxy.log" &
PROXY=$!
cleanup() { kill "$SIM" "$PROXY" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for _ in $(seq 1 100); do
    curl -fs "$ADMIN_URL/admin/status" >/dev/null 2>&1 && grep -q ready "$LOGS/sim.out" && break
    if ! kill -0 "$PROXY" 2>/dev/null || ! kill -0 "$SIM" 2>/dev/null; then
        echo "payproxy or provider-sim failed to start; logs:"; cat "$LOGS"/*.log; exit 1
    fi
    sleep 0.1
done
echo "==> provider simulator: $(cat "$LOGS/sim.out")"
echo "==> payproxy on $PROXY_URL (admin $ADMIN_URL), logs in $LOGS"
echo

pay() { # country amount currency
    local out code provider id body
    out=$(curl -s -D - -o "$LOGS/body" -X POST "$PROXY_URL/v1/payment_intents" \
        -H "x-shopper-country: $1" -H "Idempotency-Key: demo-$1-$RANDOM" \
        -d "amount=$2" -d "currency=$3" -d "metadata[order_id]=order-$1-$RANDOM")
    code=$(echo "$out" | head -1 | awk '{print $2}')
    provider=$(echo "$out" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-payproxy-provider"{print $2}')
    body=$(cat "$LOGS/body")
    id=$(echo "$body" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4 || true)
    if [[ -n "$provider" ]]; then
        printf '  shopper %-2s  %6s %s  → provider %-8s HTTP %s  %s\n' "$1" "$2" "$3" "$provider" "$code" "$id"
    else
        printf '  shopper %-2s  %6s %s  → refused          HTTP %s  %s\n' "$1" "$2" "$3" "$code" "$body"
    fi
}

echo "==> payments routed by the router-regional wasm plugin (examples/config/regional-rules.json)"
pay ID 150000 idr
pay SG 4200 sgd
pay NL 2500 eur
pay DE 9900 eur
pay US 1999 usd
pay BR 5000 brl
pay KP 100 usd
echo
echo "==> euro-zone volume split (90% sim-eu / 10% sim-us) over 50 payments:"
for _ in $(seq 1 50); do
    curl -s -o /dev/null -D - -X POST "$PROXY_URL/v1/payment_intents" -H "x-shopper-country: FR" \
        -d amount=1000 -d currency=eur | tr -d '\r' | awk -F': ' 'tolower($1)=="x-payproxy-provider"{print $2}'
done | sort | uniq -c | sed 's/^/  /'
echo
echo "==> live reload: POST /admin/reload"
curl -s -X POST "$ADMIN_URL/admin/reload"; echo
echo
echo "==> metrics (excerpt of $ADMIN_URL/metrics)"
curl -s "$ADMIN_URL/metrics" | grep -E '^payproxy_(requests_total|reloads_total|plugin_info)' | sed 's/^/  /'
echo

if [[ $KEEP_RUNNING == 1 ]]; then
    echo "payproxy keeps running: try"
    echo "  curl -X POST $PROXY_URL/v1/payment_intents -H 'x-shopper-country: ID' -d amount=1000 -d currency=idr"
    echo "  edit examples/config/regional-rules.json (reloads on save), curl $ADMIN_URL/admin/status"
    echo "Ctrl-C stops payproxy and the simulator."
    wait "$PROXY"
fi
