//! The golden fixtures, natively; payproxy's host tests run the same file through wasm.

use compliance_kyc::Kyc;
use payproxy_plugin_sdk::testing::check_compliance;

#[test]
fn golden_fixtures() {
    let cases = check_compliance::<Kyc>(include_str!("../fixtures/golden.json"));
    assert!(cases >= 15, "only {cases} cases ran");
}
