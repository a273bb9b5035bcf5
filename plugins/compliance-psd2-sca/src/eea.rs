//! The European Economic Area: where PSD2 strong customer authentication applies.

/// EU-27 plus Iceland, Liechtenstein and Norway, ISO 3166-1 alpha-2 (Greece is `GR`).
pub const EEA: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", // EU-27
    "IS", "LI", "NO", // EEA, not EU
];

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::helpers::country::is_alpha2;

    #[test]
    fn thirty_distinct_upper_case_codes() {
        let mut codes: Vec<&str> = EEA.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 30);
        assert!(codes
            .iter()
            .all(|c| is_alpha2(c) && c.to_ascii_uppercase() == *c));
        assert!(!codes.contains(&"GB") && !codes.contains(&"CH") && !codes.contains(&"EL"));
    }
}
