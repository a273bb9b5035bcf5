#!/usr/bin/env bash
# The demo: build, start the provider simulator (six providers, each speaking its own
# protocol) and payproxy with examples/config/payments.json, then play a storefront that
# speaks Stripe's API: shoppers from several countries pay with their local methods, and
# each line shows country / method → compliance verdicts → provider chosen → the outcome in
# Stripe's shape. Then one live rule change and a metrics excerpt; then keep running
# (Ctrl-C stops both).
#   scripts/demo.sh          # keep running after the sample traffic
#   scripts/demo.sh --exit   # exit after the sample traffic
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
KEEP_RUNNING=1
[[ "${1:-}" == "--exit" ]] && KEEP_RUNNING=0

PROXY_URL=http://127.0.0.1:8080
ADMIN_URL=http://127.0.0.1:9901
# Builds everything; sets STOREFRONT_KEY and SIM_ARGS (the six simulated providers).
source scripts/demo-setup.sh
target/debug/payproxy check --config examples/config/payments.json

# Serve a copy of the config directory, so the live rule change below leaves the repository
# untouched; plugin paths in the copy point back at the repository's build output.
WORK=$(mktemp -d)
LOGS=$WORK/logs
CONFIG=$WORK/config
mkdir -p "$LOGS" "$CONFIG"
cp -R examples/config/payments.json examples/config/rules "$CONFIG/"
sed -i.orig "s|\"\.\./\.\./plugins/|\"$REPO/plugins/|" "$CONFIG/payments.json" && rm -f "$CONFIG/payments.json.orig"

target/debug/provider-sim "${SIM_ARGS[@]}" >"$LOGS/sim.out" 2>"$LOGS/sim.log" &
SIM=$!
PAYPROXY_LOG=${PAYPROXY_LOG:-info} target/debug/payproxy run --config "$CONFIG/payments.json" 2>"$LOGS/payproxy.log" &
PROXY=$!
cleanup() {
    kill "$SIM" "$PROXY" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ $KEEP_RUNNING == 0 ]] && rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 300); do
    curl -fs "$ADMIN_URL/admin/status" >/dev/null 2>&1 && grep -q ready "$LOGS/sim.out" && break
    if ! kill -0 "$PROXY" 2>/dev/null || ! kill -0 "$SIM" 2>/dev/null; then
        echo "payproxy or provider-sim failed to start; logs:"; cat "$LOGS"/*.log; exit 1
    fi
    sleep 0.1
done
echo "==> $(cat "$LOGS/sim.out")"
echo "==> payproxy on $PROXY_URL (admin $ADMIN_URL), config and logs in $WORK"
echo

# The first "NAME":"value" (or number) in a JSON text; good enough for flat Stripe objects.
field() { grep -oE "\"$1\":(\"[^\"]*\"|[0-9.]+)" <<<"$2" | head -1 | cut -d: -f2- | tr -d '"' || true; }

# Compliance verdicts of one request (the verdict counters that moved), in chain order.
verdicts() { # before after
    awk '/^payproxy_compliance_verdicts_total/ {
            if (FILENAME == ARGV[1]) { seen[$1] = $2; next }
            if ($2 > seen[$1] + 0) {
                match($1, /plugin="[^"]*"/); plugin = substr($1, RSTART + 8, RLENGTH - 9)
                match($1, /rule="[^"]*"/);   rule   = substr($1, RSTART + 6, RLENGTH - 7)
                match($1, /verdict="[^"]*"/); verdict = substr($1, RSTART + 9, RLENGTH - 10)
                out[plugin] = plugin ":" rule "=" verdict
            }
         }
         END { n = split("psd2-sca kyc limits", chain, " ")
               for (i = 1; i <= n; i++) if (chain[i] in out) { printf "%s%s", sep, out[chain[i]]; sep = "  " } }' "$1" "$2"
}

# What travels to each provider.
protocol() {
    case $1 in
        stripe-like) echo "Stripe API like the storefront: request forwarded byte for byte" ;;
        adyen) echo "translated to Adyen JSON" ;;
        grabpay) echo "translated to GrabPay JSON, HMAC-SHA256 signed" ;;
        dana) echo "translated to DANA XML" ;;
        ideal) echo "translated to the iDEAL redirect API" ;;
        pix) echo "translated to the Pix cob API" ;;
    esac
}

pay() { # label, then curl -d arguments
    local label=$1; shift
    local headers body code provider status id error action url seq
    seq=$((++PAYMENTS))
    curl -s "$ADMIN_URL/metrics" >"$LOGS/before"
    # confirm=true: charge now (without it Stripe, and payproxy, only create the intent).
    headers=$(curl -s -D - -o "$LOGS/body" -X POST "$PROXY_URL/v1/payment_intents" \
        -u "$STOREFRONT_KEY:" -H "Idempotency-Key: demo-$$-$seq" -d confirm=true "$@" | tr -d '\r')
    curl -s "$ADMIN_URL/metrics" >"$LOGS/after"
    body=$(cat "$LOGS/body")
    code=$(head -1 <<<"$headers" | awk '{print $2}')
    provider=$(awk -F': ' 'tolower($1)=="x-payproxy-provider"{print $2}' <<<"$headers")
    printf '  %s\n' "$label"
    printf '      compliance  %s\n' "$(verdicts "$LOGS/before" "$LOGS/after")"
    if [[ -n $provider ]]; then
        printf '      provider    %s (%s)\n' "$provider" "$(protocol "$provider")"
    else
        printf '      provider    none: refused before any provider was contacted\n'
    fi
    if [[ $code == 2* ]]; then
        status=$(field status "$body"); id=$(field id "$body")
        action=$(field type "$(grep -o '"next_action":{.*' <<<"$body" || true)")
        url=$(field url "$body"); [[ -z $url ]] && url=$(field data "$body")
        printf '      outcome     HTTP %s  %s  %s' "$code" "$status" "$id"
        [[ -n $action ]] && printf '  next_action %s %.60s' "$action" "$url"
        grep -q payproxy_annotations <<<"$body" &&
            printf '  annotation %s %s %s' "$(field name "$(grep -o '"payproxy_annotations".*' <<<"$body")")" \
                "$(field amount "$(grep -o '"payproxy_annotations".*' <<<"$body")")" \
                "$(field currency "$(grep -o '"payproxy_annotations".*' <<<"$body")")"
        printf '\n'
    else
        error=$(grep -o '"error":{.*' <<<"$body" || true)
        printf '      outcome     HTTP %s  %s %s: %s\n' "$code" "$(field type "$error")" \
            "$(field code "$error")" "$(field message "$error")"
    fi
}
PAYMENTS=0

card() { # amount country order [extra -d ...]
    # A Stripe test payment method (the simulator issues pm_card_<cc> in country <cc>):
    # payproxy learns the card's network and issuing country from the home provider.
    local amount=$1 country=$2 order=$3; shift 3
    pay "$country / card  $(printf '%d.%02d' $((amount / 100)) $((amount % 100))) EUR  $order" \
        -d amount="$amount" -d currency=eur -d "payment_method=pm_card_${country,,}" \
        -d "payment_method_data[billing_details][address][country]=$country" \
        -d "metadata[order_id]=$order" "$@"
}

echo "==> a Stripe-speaking storefront pays through payproxy (rules: examples/config/rules/*.json)"
pay "ID / DANA wallet  150000.00 IDR  (XML API, verified phone)" \
    -d amount=15000000 -d currency=idr -d 'payment_method_data[type]=dana' \
    --data-urlencode 'payment_method_data[billing_details][phone]=+6281234567890' \
    -d 'payment_method_data[billing_details][phone_verified]=true' \
    -d 'payment_method_data[billing_details][address][country]=ID' -d 'metadata[order_id]=ID-1001'
pay "ID / DANA wallet  150000.00 IDR  (phone not verified)" \
    -d amount=15000000 -d currency=idr -d 'payment_method_data[type]=dana' \
    --data-urlencode 'payment_method_data[billing_details][phone]=+6281234567890' \
    -d 'payment_method_data[billing_details][address][country]=ID' -d 'metadata[order_id]=ID-1002'
pay "NL / iDEAL  25.00 EUR  (bank redirect; iDEAL 0.5% is cheaper than Adyen)" \
    -d amount=2500 -d currency=eur -d 'payment_method_data[type]=ideal' \
    -d 'payment_method_data[ideal][bank]=ing' -d 'payment_method_data[ideal][iban]=NL91ABNA0417164300' \
    -d 'payment_method_data[billing_details][address][country]=NL' \
    --data-urlencode 'return_url=https://shop.example/return' -d 'metadata[order_id]=NL-2001'
pay "BR / Pix  50.00 BRL  (QR code)" \
    -d amount=5000 -d currency=brl -d 'payment_method_data[type]=pix' \
    -d 'payment_method_data[pix][tax_id]=529.982.247-25' -d 'receipt_email=joao@example.com.br' \
    -d 'payment_method_data[billing_details][address][country]=BR' -d 'metadata[order_id]=BR-3001'
pay "SG / GrabPay  42.00 SGD  (HMAC-signed JSON)" \
    -d amount=4200 -d currency=sgd -d 'payment_method_data[type]=grabpay' \
    -d 'payment_method_data[billing_details][address][country]=SG' -d 'metadata[order_id]=SG-4001'
pay "VN / GrabPay  100000 VND  (cross-border VAT)" \
    -d amount=100000 -d currency=vnd -d 'payment_method_data[type]=grabpay' \
    -d 'payment_method_data[billing_details][address][country]=VN' -d 'metadata[order_id]=VN-4002'
card 2500 DE DE-5001
card 25000 DE DE-5002
card 25000 DE DE-5003 -d 'payment_method_options[card][three_d_secure][authenticated]=true'
card 1200000 DE DE-5004 -d 'payment_method_options[card][three_d_secure][authenticated]=true'
card 1000 KP KP-6001
echo

echo "==> live rule change: iDEAL now goes to Adyen only (edit $CONFIG/rules/router.json)"
version() { curl -s "$ADMIN_URL/admin/status" | grep -o '"version":[0-9]*' | head -1 | cut -d: -f2; }
before=$(version)
rules=$CONFIG/rules/router.json
sed 's|"providers": \[ { "name": "adyen" }, { "name": "ideal" } \]|"providers": [ { "name": "adyen" } ]|' \
    "$rules" >"$rules.new"
cmp -s "$rules" "$rules.new" && { echo "the nl-ideal rule in $rules was not found"; exit 1; }
mv "$rules.new" "$rules"
for _ in $(seq 1 100); do [[ "$(version)" != "$before" ]] && break; sleep 0.1; done
echo "  config version $before → $(version), no restart"
pay "NL / iDEAL  25.00 EUR  (now Adyen)" \
    -d amount=2500 -d currency=eur -d 'payment_method_data[type]=ideal' \
    -d 'payment_method_data[ideal][bank]=ing' -d 'payment_method_data[ideal][iban]=NL91ABNA0417164300' \
    -d 'payment_method_data[billing_details][address][country]=NL' \
    --data-urlencode 'return_url=https://shop.example/return' -d 'metadata[order_id]=NL-2002'
echo

echo "==> metrics (excerpt of $ADMIN_URL/metrics)"
curl -s "$ADMIN_URL/metrics" |
    grep -E '^payproxy_(requests_total|attempts_total|compliance_verdicts_total\{[^}]*verdict="(deny|challenge)"|reloads_total)' |
    sed 's/^/  /'
echo

if [[ $KEEP_RUNNING == 1 ]]; then
    echo "payproxy keeps running: try"
    echo "  curl $PROXY_URL/v1/payment_intents -u $STOREFRONT_KEY: -d amount=4200 -d currency=sgd -d confirm=true -d 'payment_method_data[type]=grabpay' -d 'payment_method_data[billing_details][address][country]=SG'"
    echo "  edit $CONFIG/rules/*.json (reloads on save), curl $ADMIN_URL/admin/status"
    echo "Ctrl-C stops payproxy and the simulator."
    wait "$PROXY"
fi
