//! The payments demo config (`examples/config/payments.json`) pointed at an in-process
//! simulator, so the end-to-end tests exercise the very rules the demo runs.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::Simulator;

/// The providers of the payments demo; a simulator for [`payments_config`] serves these names.
pub const PAYMENT_PROVIDERS: &[&str] = &["stripe-like", "adyen", "grabpay", "dana", "ideal", "pix"];

/// `examples/config` of this repository.
pub fn example_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config")
}

/// A JSON file under `examples/config`, e.g. `rules/router.json`.
pub fn example_json(relative: &str) -> Value {
    let path = example_config_dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `examples/config/payments.json` with: listeners and admin on port 0, no file watching,
/// every provider's URL pointing at the simulated provider of the same name, plugin paths
/// absolute (checked to exist) and each plugin's `config_file` inlined as `config`.
pub fn payments_config(sim: &Simulator) -> Value {
    let dir = example_config_dir();
    let mut config = example_json("payments.json");
    config["listeners"] = json!([{ "addr": "127.0.0.1:0" }]);
    config["admin"] = json!({ "addr": "127.0.0.1:0" });
    config["reload"] = json!({ "watch": false });
    for (name, plugin) in config["plugins"].as_object_mut().unwrap() {
        let path = dir.join(plugin["path"].as_str().unwrap());
        assert!(
            path.exists(),
            "plugin {name}: {} is missing: run scripts/build-plugins.sh",
            path.display()
        );
        plugin["path"] = path.to_string_lossy().into_owned().into();
        if let Some(file) = plugin
            .as_object_mut()
            .unwrap()
            .remove("config_file")
            .and_then(|f| f.as_str().map(str::to_string))
        {
            plugin["config"] = example_json(&file);
        }
    }
    for (name, provider) in config["providers"].as_object_mut().unwrap() {
        provider["url"] = sim.base_url(name).into();
    }
    config
}
