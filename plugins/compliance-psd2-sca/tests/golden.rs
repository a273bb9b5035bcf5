//! The golden fixtures, natively; payproxy's host tests run the same file through wasm.

use compliance_psd2_sca::Psd2Sca;
use payproxy_plugin_sdk::testing::check_compliance;

#[test]
fn golden_fixtures() {
    let cases = check_compliance::<Psd2Sca>(include_str!("../fixtures/golden.json"));
    assert!(cases >= 36, "only {cases} cases ran");
}
