# What the demo (scripts/demo.sh) and the cluster example (examples/cluster/run.sh) share.
# Source it from the repository root: it builds the plugins and binaries and sets
#   STOREFRONT_KEY  the key examples/config/payments.json accepts (it keeps only its SHA-256);
#                   a real storefront sends its own, e.g. its existing Stripe secret key
#   SIM_ARGS        provider-sim's arguments: the six simulated providers on 9101-9106

STOREFRONT_KEY=sk_test_storefront_demo
SIM_ARGS=()
for p in stripe-like=127.0.0.1:9101 adyen=127.0.0.1:9102 grabpay=127.0.0.1:9103 \
         dana=127.0.0.1:9104 ideal=127.0.0.1:9105 pix=127.0.0.1:9106; do
    SIM_ARGS+=(--provider "$p")
done

echo "==> building plugins and binaries"
scripts/build-plugins.sh
cargo build --quiet -p payproxy -p provider-sim
