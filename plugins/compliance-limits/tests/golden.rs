//! The golden fixtures, natively; payproxy's host tests run the same file through wasm.

use compliance_limits::Limits;
use payproxy_plugin_sdk::testing::check_compliance;

#[test]
fn golden_fixtures() {
    let cases = check_compliance::<Limits>(include_str!("../fixtures/golden.json"));
    assert!(cases >= 20, "only {cases} cases ran");
}
