//! The golden fixtures, natively; the proxy runs the same file through the wasm build.

use dialect_ideal::Ideal;

#[test]
fn golden_fixtures() {
    let cases = payproxy_plugin_sdk::testing::check_egress::<Ideal>(include_str!(
        "../fixtures/golden.json"
    ));
    assert!(cases >= 40, "only {cases} cases ran");
}
