//! The golden fixtures, natively; the proxy runs the same file through the wasm build.

use dialect_adyen::Adyen;

#[test]
fn golden_fixtures() {
    let cases = payproxy_plugin_sdk::testing::check_egress::<Adyen>(include_str!(
        "../fixtures/golden.json"
    ));
    assert!(cases >= 40, "only {cases} cases ran");
}
