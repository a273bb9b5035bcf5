//! The golden fixtures, natively; the proxy runs the same file through the wasm build.

use dialect_mpesa::Mpesa;

#[test]
fn golden_fixtures() {
    let cases = payproxy_plugin_sdk::testing::check_egress::<Mpesa>(include_str!(
        "../fixtures/golden.json"
    ));
    assert!(cases >= 17, "only {cases} cases ran");
}
