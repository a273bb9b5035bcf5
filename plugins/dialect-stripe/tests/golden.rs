//! The golden fixtures (`fixtures/golden.json`), run natively through the 0.4.0 storefront
//! and the egress; the proxy's host tests run the same file through the wasm build.

use dialect_stripe::Stripe;
use payproxy_plugin_sdk::testing::check_storefront;

const GOLDEN: &str = include_str!("../fixtures/golden.json");

#[test]
fn fixtures() {
    let n = check_storefront::<Stripe>(GOLDEN);
    assert!(n >= 120, "only {n} cases");
}
