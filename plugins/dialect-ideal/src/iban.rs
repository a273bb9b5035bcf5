//! IBAN (ISO 13616) validation: normalisation, per-country length, mod-97 check digits.

/// Lengths of the IBANs of the SEPA countries (ISO 13616 registry). Other countries get the
/// generic 15–34 range.
#[rustfmt::skip]
pub const LENGTHS: &[(&str, usize)] = &[
    ("AD", 24), ("AT", 20), ("BE", 16), ("BG", 22), ("CH", 21), ("CY", 28), ("CZ", 24),
    ("DE", 22), ("DK", 18), ("EE", 20), ("ES", 24), ("FI", 18), ("FR", 27), ("GB", 22),
    ("GI", 23), ("GR", 27), ("HR", 21), ("HU", 28), ("IE", 22), ("IS", 26), ("IT", 27),
    ("LI", 21), ("LT", 20), ("LU", 20), ("LV", 21), ("MC", 27), ("MT", 31), ("NL", 18),
    ("NO", 15), ("PL", 28), ("PT", 25), ("RO", 24), ("SE", 24), ("SI", 19), ("SK", 24),
    ("SM", 27), ("VA", 22),
];

/// Shortest and longest IBAN of any country.
pub const GENERIC_LENGTH: std::ops::RangeInclusive<usize> = 15..=34;

/// Why an IBAN was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IbanError {
    /// Not `CC` + two check digits + alphanumerics.
    Format,
    /// Wrong length for its country (or outside 15–34).
    Length,
    /// The mod-97 check fails.
    Checksum,
}

/// Strip spaces and upper-case: `nl91 abna 0417 1643 00` → `NL91ABNA0417164300`.
pub fn normalise(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// The normalised IBAN, if it is one.
pub fn validate(raw: &str) -> Result<String, IbanError> {
    let iban = normalise(raw);
    let bytes = iban.as_bytes();
    let well_formed = bytes.len() >= 4
        && bytes.iter().all(u8::is_ascii_alphanumeric)
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..4].iter().all(u8::is_ascii_digit);
    if !well_formed {
        return Err(IbanError::Format);
    }
    let length_ok = match LENGTHS.iter().find(|(country, _)| *country == &iban[..2]) {
        Some((_, length)) => iban.len() == *length,
        None => GENERIC_LENGTH.contains(&iban.len()),
    };
    if !length_ok {
        return Err(IbanError::Length);
    }
    if remainder(&format!("{}{}", &iban[4..], &iban[..4])) != 1 {
        return Err(IbanError::Checksum);
    }
    Ok(iban)
}

/// The value mod 97 of an alphanumeric string read with A=10 … Z=35 (ISO 7064 MOD 97-10).
/// Callers pass only ASCII alphanumerics.
pub fn remainder(text: &str) -> u32 {
    text.bytes().fold(0u32, |acc, b| {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b.to_ascii_uppercase() - b'A') + 10
        };
        // One digit or two (letters), folded in without ever growing past u32.
        let shift = if value >= 10 { 100 } else { 10 };
        (acc * shift + value) % 97
    })
}

/// The two check digits for `country` and `bban`, e.g. to build test IBANs.
pub fn check_digits(country: &str, bban: &str) -> String {
    format!("{:02}", 98 - remainder(&format!("{bban}{country}00")))
}

/// `…1234`: the last four characters of a long enough IBAN, for messages. Never the whole one.
pub fn masked(raw: &str) -> String {
    let iban = normalise(raw);
    let chars: Vec<char> = iban.chars().collect();
    if chars.len() < 8 {
        return "…".into();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("…{tail}")
}

/// A BIC (ISO 9362): 4 letters bank, 2 letters country, 2 alphanumerics location, optional
/// 3 alphanumerics branch.
pub fn valid_bic(raw: &str) -> bool {
    let bic = raw.trim().as_bytes();
    (bic.len() == 8 || bic.len() == 11)
        && bic[..6].iter().all(u8::is_ascii_alphabetic)
        && bic[6..].iter().all(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_good_ibans() {
        for iban in [
            "NL91 ABNA 0417 1643 00",
            "DE89370400440532013000",
            "BE68539007547034",
            "FR1420041010050500013M02606",
            "ES9121000418450200051332",
            "IT60X0542811101000000123456",
            "GB29NWBK60161331926819",
            "gb82 west 1234 5698 7654 32",
            "NO9386011117947",
        ] {
            assert!(validate(iban).is_ok(), "{iban}");
        }
        assert_eq!(
            validate("nl91 abna 0417 1643 00").unwrap(),
            "NL91ABNA0417164300"
        );
    }

    #[test]
    fn bad_ibans() {
        assert_eq!(validate("NL91ABNA0417164301"), Err(IbanError::Checksum));
        assert_eq!(validate("NL91ABNA041716430"), Err(IbanError::Length));
        assert_eq!(validate("DE8937040044053201300"), Err(IbanError::Length));
        assert_eq!(
            validate("XX12"),
            Err(IbanError::Length),
            "unknown country, too short"
        );
        assert_eq!(validate("91NLABNA0417164300"), Err(IbanError::Format));
        assert_eq!(validate("NL91-ABNA-0417-1643-00"), Err(IbanError::Format));
        assert_eq!(validate(""), Err(IbanError::Format));
        assert_eq!(validate("NLÄ1ABNA0417164300"), Err(IbanError::Format));
    }

    #[test]
    fn check_digits_and_masking() {
        assert_eq!(check_digits("NL", "ABNA0417164300"), "91");
        assert_eq!(check_digits("DE", "370400440532013000"), "89");
        assert_eq!(masked("NL91 ABNA 0417 1643 00"), "…4300");
        assert_eq!(masked("NL91"), "…");
    }

    #[test]
    fn bics() {
        assert!(valid_bic("ABNANL2A"));
        assert!(valid_bic("INGBNL2AXXX"));
        assert!(!valid_bic("ABNA"));
        assert!(!valid_bic("1BNANL2A"));
        assert!(!valid_bic("ABNANL2A12"));
    }
}
