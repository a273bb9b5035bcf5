//! The golden fixtures (`fixtures/golden.json`), run natively; the proxy's host tests run the
//! same file through the wasm build.

use dialect_stripe::Stripe;
use payproxy_plugin_sdk::testing::{check_egress, check_ingress};

const GOLDEN: &str = include_str!("../fixtures/golden.json");

#[test]
fn ingress_fixtures() {
    let n = check_ingress::<Stripe>(GOLDEN);
    assert!(n >= 10 + 8 + 5, "only {n} ingress cases");
}

#[test]
fn egress_fixtures() {
    let n = check_egress::<Stripe>(GOLDEN);
    assert!(n >= 5 + 6, "only {n} egress cases");
}
