//! Checks on single values: countries, phones, ids, card-like numbers, IBAN and tax id shapes.

/// ISO 3166-1 alpha-2 codes, plus `XK` (Kosovo, user-assigned but used by Stripe and banks).
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET \
FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR \
IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW";

/// The upper-case country code if `text` is a known ISO 3166-1 alpha-2 code.
pub fn country(text: &str) -> Option<String> {
    let code = text.trim().to_ascii_uppercase();
    let known = code.len() == 2 && COUNTRIES.split(' ').any(|c| c == code);
    known.then_some(code)
}

/// A phone number as E.164 (`+` and 7–15 digits, no leading zero), after dropping the
/// spaces, dots, dashes and parentheses people type.
pub fn phone(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')')).collect();
    let digits = compact.strip_prefix('+')?;
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(compact)
}

/// An object id safe to put in a URL path: 1–255 of `[A-Za-z0-9_-]`.
pub fn object_id(text: &str) -> bool {
    (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a free-text value looks like a card number: 13–19 digits (spaces and dashes
/// allowed) starting with 2–6, the leading digits of the card networks, passing the Luhn check.
pub fn card_like(text: &str) -> bool {
    let digits: Vec<u32> = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_digit(10))
        .collect::<Option<Vec<u32>>>()
        .unwrap_or_default();
    if !(13..=19).contains(&digits.len()) || !(2..=6).contains(&digits[0]) {
        return false;
    }
    luhn(&digits)
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum % 10 == 0
}

/// An IBAN without spaces, upper case, if it has the IBAN shape (country letters, check
/// digits, 11–30 alphanumerics). The checksum is the bank dialect's to verify.
pub fn iban_shape(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| *c != ' ').collect::<String>().to_ascii_uppercase();
    let b = compact.as_bytes();
    let ok = (15..=34).contains(&b.len())
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..4].iter().all(u8::is_ascii_digit)
        && b[4..].iter().all(u8::is_ascii_alphanumeric);
    ok.then_some(compact)
}

/// A BIC (8 or 11 alphanumerics, letters for bank and country), upper case.
pub fn bic(text: &str) -> Option<String> {
    let code = text.trim().to_ascii_uppercase();
    let b = code.as_bytes();
    let ok = (b.len() == 8 || b.len() == 11)
        && b[..6].iter().all(u8::is_ascii_uppercase)
        && b[6..].iter().all(u8::is_ascii_alphanumeric);
    ok.then_some(code)
}

/// A CPF (11 digits) or CNPJ (14 digits), punctuation (`.`, `-`, `/`, spaces) dropped. The
/// check digits are the Pix dialect's to verify.
pub fn tax_id_shape(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| !matches!(c, '.' | '-' | '/' | ' ')).collect();
    let ok = (digits.len() == 11 || digits.len() == 14) && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries() {
        assert_eq!(country("nl").as_deref(), Some("NL"));
        assert_eq!(country("ID").as_deref(), Some("ID"));
        assert_eq!(country("XX"), None);
        assert_eq!(country("NLD"), None);
        assert_eq!(country(""), None);
        assert_eq!(COUNTRIES.split(' ').count(), 250);
    }

    #[test]
    fn phones() {
        assert_eq!(phone("+62 812-3456-7890").as_deref(), Some("+6281234567890"));
        assert_eq!(phone("081234567890"), None, "E.164 needs the country code");
        assert_eq!(phone("+0123456789"), None);
        assert_eq!(phone("+12"), None);
        assert_eq!(phone("+1234567890123456"), None);
    }

    #[test]
    fn card_like_values() {
        assert!(card_like("4242424242424242"));
        assert!(card_like("4242 4242 4242 4242"));
        assert!(card_like("5555-5555-5555-4444"));
        assert!(!card_like("4242424242424241"), "Luhn fails");
        assert!(!card_like("1234567812345670"), "no network starts with 1");
        assert!(!card_like("424242"), "too short");
        assert!(!card_like("order 4242424242424242"));
    }

    #[test]
    fn ids_and_bank_fields() {
        assert!(object_id("pi_123_abc"));
        assert!(!object_id("pi/../x"));
        assert!(!object_id(""));
        assert_eq!(iban_shape("nl91 abna 0417 1643 00").as_deref(), Some("NL91ABNA0417164300"));
        assert_eq!(iban_shape("NL91"), None);
        assert_eq!(bic("abnanl2a").as_deref(), Some("ABNANL2A"));
        assert_eq!(bic("abn_amro"), None);
        assert_eq!(tax_id_shape("123.456.789-09").as_deref(), Some("12345678909"));
        assert_eq!(tax_id_shape("12.345.678/0001-95").as_deref(), Some("12345678000195"));
        assert_eq!(tax_id_shape("1234"), None);
    }
}
