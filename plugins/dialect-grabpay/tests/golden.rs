//! The golden fixtures, natively; the proxy runs the same file through the wasm build.

use dialect_grabpay::GrabPay;

#[test]
fn golden_fixtures() {
    let cases = payproxy_plugin_sdk::testing::check_egress::<GrabPay>(include_str!(
        "../fixtures/golden.json"
    ));
    assert!(cases >= 30, "only {cases} cases ran");
}
