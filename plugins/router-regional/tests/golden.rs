//! The golden fixtures (`fixtures/golden.json`, contract 0.2.0 "route" cases), natively;
//! payproxy's host tests run the same file through wasm.

use payproxy_plugin_sdk::testing::check_router;
use router_regional::Regional;

#[test]
fn golden_fixtures() {
    let cases = check_router::<Regional>(include_str!("../fixtures/golden.json"));
    assert!(cases >= 20, "only {cases} cases ran");
}
