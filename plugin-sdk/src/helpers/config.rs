//! Plugin configs as JSON: deserialised with the failing field's path in the error.
//!
//! The host hands `init` the plugin's config re-serialised as JSON text, so serde's
//! ` at line L column C` would point into text the operator never wrote: errors name the field
//! path instead (`rules[0].country: …`).
//!
//! ```
//! use payproxy_plugin_sdk::helpers::config;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     #[serde(default)]
//!     title: Option<String>,
//! }
//!
//! let parsed: Config = config::parse("my-plugin", "").unwrap();
//! assert!(parsed.title.is_none());
//! let error = config::parse::<Config>("my-plugin", r#"{"title": 1}"#).err().unwrap();
//! assert_eq!(error, "my-plugin config: title: invalid type: integer `1`, expected a string");
//! ```

use std::fmt::Display;

use serde::de::DeserializeOwned;

/// Why a config did not deserialise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The failing field as `serde_path_to_error` prints it: `rules[0].country`, `.` for the
    /// root (the text is not an object, or a top-level field is missing).
    pub path: String,
    /// serde's message without its ` at line L column C` suffix.
    pub message: String,
    /// serde's message as serde_json wrote it, position included.
    pub with_position: String,
}

impl ConfigError {
    /// `<plugin> config: <path>: <message>` (the root path is printed as `.`).
    pub fn in_plugin(&self, plugin: &str) -> String {
        format!("{plugin} config: {}: {}", self.path, self.message)
    }
}

/// Deserialise the JSON config `text`; errors name the field path.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let with_position = e.inner().to_string();
        let message = with_position
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string();
        ConfigError {
            path: e.path().to_string(),
            message,
            with_position,
        }
    })
}

/// `text`, or `{}` when it is blank: a plugin whose fields are all optional takes no config.
pub fn or_empty_object(text: &str) -> &str {
    if text.trim().is_empty() {
        "{}"
    } else {
        text
    }
}

/// The config of a plugin whose fields are all optional: blank text is `{}`, and errors read
/// `<plugin> config: <field path>: <message>`.
pub fn parse<T: DeserializeOwned>(plugin: &str, text: &str) -> Result<T, String> {
    from_json(or_empty_object(text)).map_err(|e| e.in_plugin(plugin))
}

/// A config error message: `<plugin> config: <path>: <message>`, or
/// `<plugin> config: <message>` when `path` is the root (empty or `.`).
pub fn error(plugin: &str, path: &str, message: impl Display) -> String {
    match path {
        "" | "." => format!("{plugin} config: {message}"),
        _ => format!("{plugin} config: {path}: {message}"),
    }
}

/// Check a `base_path` field (the API's path prefix under the provider's base URL): empty,
/// or starting with `/` and not ending with `/`.
pub fn check_base_path(plugin: &str, path: &str) -> Result<(), String> {
    if !path.is_empty() && (!path.starts_with('/') || path.ends_with('/')) {
        return Err(format!(
            "{plugin} config: base_path: {path:?} must start with '/' and not end with '/'"
        ));
    }
    Ok(())
}

/// Check that an optional text field, when given, is not blank:
/// `<plugin> config: <field>: must not be empty`.
pub fn check_not_blank(plugin: &str, field: &str, value: Option<&str>) -> Result<(), String> {
    if value.is_some_and(|v| v.trim().is_empty()) {
        return Err(format!("{plugin} config: {field}: must not be empty"));
    }
    Ok(())
}

/// The name of a config rule: the one given, else `default()`. A given name must not be
/// blank; the error is the message for that field.
pub fn rule_name(
    given: Option<String>,
    default: impl FnOnce() -> String,
) -> Result<String, &'static str> {
    match given {
        Some(name) if name.trim().is_empty() => Err("must not be empty (omit it for a default)"),
        Some(name) => Ok(name),
        None => Ok(default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        rules: Vec<Rule>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        country: String,
    }

    #[test]
    fn errors_name_the_path_without_the_position() {
        let e = from_json::<Sample>(r#"{"rules":[{"country":"ID"},{"country":5}]}"#).unwrap_err();
        assert_eq!(e.path, "rules[1].country");
        assert_eq!(e.message, "invalid type: integer `5`, expected a string");
        assert_eq!(
            e.with_position,
            "invalid type: integer `5`, expected a string at line 1 column 39"
        );
        assert_eq!(
            e.in_plugin("p"),
            "p config: rules[1].country: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn unknown_fields_and_the_root() {
        let e = from_json::<Sample>(r#"{"nam":"x"}"#).unwrap_err();
        assert_eq!(e.path, "nam");
        assert!(
            e.message.starts_with("unknown field `nam`, expected"),
            "{e:?}"
        );
        let e = from_json::<Sample>("5").unwrap_err();
        assert_eq!(e.path, ".");
        assert_eq!(e.in_plugin("p"), format!("p config: .: {}", e.message));
        assert_eq!(
            error("p", &e.path, &e.message),
            format!("p config: {}", e.message)
        );
        assert!(from_json::<Sample>("").is_err(), "blank is not JSON");
    }

    #[test]
    fn blank_text_is_an_empty_object() {
        assert_eq!(or_empty_object(" \n"), "{}");
        assert_eq!(or_empty_object("{\"a\":1}"), "{\"a\":1}");
        let empty = Sample {
            name: None,
            rules: Vec::new(),
        };
        assert_eq!(parse::<Sample>("p", ""), Ok(empty));
        assert_eq!(
            parse::<Sample>("p", r#"{"name":true}"#),
            Err("p config: name: invalid type: boolean `true`, expected a string".into())
        );
    }

    #[test]
    fn base_paths_and_blank_fields() {
        for ok in ["", "/v1", "/adyen/v71"] {
            assert_eq!(check_base_path("p", ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_base_path("p", "v1/"),
            Err("p config: base_path: \"v1/\" must start with '/' and not end with '/'".into())
        );
        assert!(check_base_path("p", "/v1/").is_err() && check_base_path("p", "/").is_err());
        assert_eq!(check_not_blank("p", "key", None), Ok(()));
        assert_eq!(check_not_blank("p", "key", Some("k")), Ok(()));
        assert_eq!(
            check_not_blank("p", "key", Some(" \t")),
            Err("p config: key: must not be empty".into())
        );
    }

    #[test]
    fn rule_names() {
        let default = || "rule-id-card".to_string();
        assert_eq!(rule_name(Some("mine".into()), default), Ok("mine".into()));
        assert_eq!(rule_name(None, default), Ok("rule-id-card".into()));
        assert_eq!(
            rule_name(Some(" ".into()), default),
            Err("must not be empty (omit it for a default)")
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(error("p", "", "bad"), "p config: bad");
        assert_eq!(error("p", ".", "bad"), "p config: bad");
        assert_eq!(
            error("p", "rules[0].name", "bad"),
            "p config: rules[0].name: bad"
        );
    }
}
