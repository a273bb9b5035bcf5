//! The IBAN check the simulated bank applies (ISO 13616): written apart from the plugin's on
//! purpose, so the two check each other.

/// IBAN lengths of the countries the simulator knows; others need 15–34 characters.
#[rustfmt::skip]
const LENGTHS: &[(&str, usize)] = &[
    ("AT", 20), ("BE", 16), ("CH", 21), ("DE", 22), ("DK", 18), ("ES", 24), ("FI", 18),
    ("FR", 27), ("GB", 22), ("IE", 22), ("IT", 27), ("LU", 20), ("NL", 18), ("NO", 15),
    ("PL", 28), ("PT", 25), ("SE", 24),
];

/// Whether `raw` (spaces allowed, any case) is a valid IBAN.
pub(super) fn valid(raw: &str) -> bool {
    let iban: Vec<u8> = raw
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if iban.len() < 5 || !iban.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    if !iban[..2].iter().all(u8::is_ascii_uppercase) || !iban[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let expected = LENGTHS
        .iter()
        .find(|(country, _)| country.as_bytes() == &iban[..2])
        .map(|(_, length)| *length);
    let length_ok = match expected {
        Some(length) => iban.len() == length,
        None => (15..=34).contains(&iban.len()),
    };
    // Rearranged (BBAN first), each letter read as two digits, the number mod 97 must be 1.
    let rearranged = iban[4..].iter().chain(&iban[..4]);
    let remainder = rearranged.fold(0u64, |acc, b| match b {
        b'0'..=b'9' => (acc * 10 + u64::from(b - b'0')) % 97,
        _ => (acc * 100 + u64::from(b - b'A') + 10) % 97,
    });
    length_ok && remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans() {
        assert!(valid("NL91 ABNA 0417 1643 00"));
        assert!(valid("de89370400440532013000"));
        assert!(valid("GB29NWBK60161331926819"));
        assert!(!valid("NL91ABNA0417164301"));
        assert!(!valid("NL91ABNA041716430"));
        assert!(!valid("NL"));
        assert!(!valid("NL91-ABNA-0417-1643-00"));
    }
}
