//! The European Economic Area: where PSD2 strong customer authentication applies.

/// EU-27 plus Iceland, Liechtenstein and Norway, ISO 3166-1 alpha-2 (Greece is `GR`).
pub const EEA: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", // EU-27
    "IS", "LI", "NO", // EEA, not EU
];

/// True when `code` is an ISO 3166-1 alpha-2 shape (two ASCII letters, any case).
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_distinct_upper_case_codes() {
        let mut codes: Vec<&str> = EEA.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 30);
        assert!(codes
            .iter()
            .all(|c| is_country_code(c) && c.to_ascii_uppercase() == *c));
        assert!(!codes.contains(&"GB") && !codes.contains(&"CH") && !codes.contains(&"EL"));
    }
}
