#!/usr/bin/env bash
# Three payproxy instances sharing one PostgreSQL, all on loopback: the provider simulator,
# a throwaway Postgres (installed from Debian packages if missing, run as nobody when root),
# and payproxy ×3 with examples/config/payments.json, each on its own ports and with
#   "state": { "kind": "postgres", "postgres": { "url": { "env": "PAYPROXY_PG_URL" } } }
# Then a payment on instance 1, its storefront retry on instance 2 (replayed, not charged
# again), and each instance's status (instance id, config hash). Keeps running; Ctrl-C stops
# everything (add --exit to stop after the sample).
#   examples/cluster/run.sh [--exit]
# Ports: storefront 8081-8083, admin 9911-9913, simulated providers 9101-9106.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
KEEP_RUNNING=1
[[ "${1:-}" == "--exit" ]] && KEEP_RUNNING=0
# Builds everything; sets STOREFRONT_KEY and SIM_ARGS (the six simulated providers).
source scripts/demo-setup.sh

WORK=$(mktemp -d /tmp/payproxy-cluster.XXXXXX)
chmod 755 "$WORK"
PIDS=()
source scripts/postgres.sh
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pg_stop "$WORK/pg"
    [[ $KEEP_RUNNING == 0 ]] && rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "==> PostgreSQL on loopback"
pg_install
PG_FSYNC=on pg_start "$WORK/pg"
export PAYPROXY_PG_URL=$PG_URL
echo "    $PG_URL (data in $WORK/pg)"

target/debug/provider-sim "${SIM_ARGS[@]}" >"$WORK/sim.out" 2>"$WORK/sim.log" &
PIDS+=($!)

mkdir -p "$WORK/config"
cp -R examples/config/rules "$WORK/config/"
for i in 1 2 3; do
    python3 - "$REPO" "$i" >"$WORK/config/instance-$i.json" <<'PY'
import json, sys
repo, i = sys.argv[1], int(sys.argv[2])
config = json.load(open(f"{repo}/examples/config/payments.json"))
for plugin in config["plugins"].values():
    plugin["path"] = plugin["path"].replace("../../", f"{repo}/")
config["listeners"] = [{"addr": f"127.0.0.1:{8080 + i}"}]
config["admin"] = {"addr": f"127.0.0.1:{9910 + i}"}
config["state"] = {"kind": "postgres", "postgres": {"url": {"env": "PAYPROXY_PG_URL"}}}
print(json.dumps(config, indent=2))
PY
    PAYPROXY_LOG=${PAYPROXY_LOG:-info} target/debug/payproxy run \
        --config "$WORK/config/instance-$i.json" 2>"$WORK/payproxy-$i.log" &
    PIDS+=($!)
done

for i in 1 2 3; do
    for _ in $(seq 1 600); do
        curl -fs "http://127.0.0.1:991$i/admin/status" >/dev/null 2>&1 && break
        kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "instance $i failed:"; cat "$WORK/payproxy-$i.log"; exit 1; }
        sleep 0.1
    done
done
echo "==> three instances up; configs and logs in $WORK"

pay() { # instance, idempotency key
    curl -s -D "$WORK/headers" -o "$WORK/body" "http://127.0.0.1:808$1/v1/payment_intents" \
        -u "$STOREFRONT_KEY:" -H "Idempotency-Key: $2" \
        -d amount=2000 -d currency=eur -d payment_method=pm_card_de \
        -d 'payment_method_data[billing_details][address][country]=DE' \
        -d 'metadata[order_id]=CLUSTER-1'
    printf '    instance %s: %s %s replayed=%s\n' "$1" \
        "$(head -1 "$WORK/headers" | cut -d' ' -f2)" \
        "$(grep -o '"id":"[^"]*"' "$WORK/body" | head -1)" \
        "$(grep -i '^idempotent-replayed:' "$WORK/headers" | tr -d '\r' | cut -d' ' -f2)"
}
KEY=cluster-demo-$RANDOM$RANDOM
echo "==> a payment on instance 1, the storefront's retry on instance 2 (same key)"
pay 1 "$KEY"
pay 2 "$KEY"
echo "==> each instance's state store and config hash"
for i in 1 2 3; do
    curl -s "http://127.0.0.1:991$i/admin/status" | python3 -c '
import json, sys; s = json.load(sys.stdin)
print("    instance {}: {} id {} config {}".format(sys.argv[1], s["state"]["kind"],
      s["state"]["instance"], s["config"]["hash"][:12]))' "$i"
done
if ((KEEP_RUNNING)); then
    echo "==> running; storefront on 127.0.0.1:8081-8083, Ctrl-C stops everything"
    wait
fi
