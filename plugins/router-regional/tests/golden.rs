//! The golden fixtures (`fixtures/golden.json`, "route" cases, run through the 0.3.0 router), natively;
//! payproxy's host tests run the same file through wasm.

use payproxy_plugin_sdk::testing::check_router_v3;
use router_regional::Regional;

#[test]
fn golden_fixtures() {
    let cases = check_router_v3::<Regional>(include_str!("../fixtures/golden.json"));
    assert!(cases >= 20, "only {cases} cases ran");
}
