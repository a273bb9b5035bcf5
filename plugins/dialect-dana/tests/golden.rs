//! The golden fixtures, natively; the proxy runs the same file through the wasm build.

use dialect_dana::Dana;

#[test]
fn golden_fixtures() {
    let cases =
        payproxy_plugin_sdk::testing::check_egress::<Dana>(include_str!("../fixtures/golden.json"));
    assert!(cases >= 30, "only {cases} cases ran");
}
