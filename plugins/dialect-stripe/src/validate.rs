//! Checks on single values: countries, phones, ids, BICs, card-like numbers.

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
    // The list is read in place as sorted 3-byte entries ("AD ", …, "YT ", and "ZW" left
    // over) and searched by halves: this runs on every payment.
    let (entries, last) = COUNTRIES.as_bytes().as_chunks::<3>();
    let known = code.len() == 2
        && (entries
            .binary_search_by(|entry| entry[..2].cmp(code.as_bytes()))
            .is_ok()
            || last == code.as_bytes());
    known.then_some(code)
}

/// A phone number as E.164 (`+` and 7–15 digits, no leading zero), after dropping the
/// spaces, dots, dashes and parentheses people type.
pub fn phone(text: &str) -> Option<String> {
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+')?;
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(compact)
}

/// An object id safe to put in a URL path: 1–255 of `[A-Za-z0-9_-]`.
pub fn object_id(text: &str) -> bool {
    (1..=255).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a free-text value contains something that looks like a card number: 13–19
/// digits, in groups separated by single spaces or dashes, starting with 2–6 (the leading
/// digits of the card networks) and passing the Luhn check. A stretch right after `+` is a
/// phone number (`+62 812…`), not a card.
pub fn card_like(text: &str) -> bool {
    // Most values have too few digits to hold a card: one cheap count skips the scan.
    if text.bytes().filter(u8::is_ascii_digit).count() < 13 {
        return false;
    }
    // Stretches of digits, spaces and dashes, cut at any other character (and at the end).
    let mut start = 0;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), '\0')))
    {
        if c.is_ascii_digit() || c == ' ' || c == '-' {
            continue;
        }
        if start < i && !text[..start].ends_with('+') && stretch_has_card(&text[start..i]) {
            return true;
        }
        start = i + c.len_utf8();
    }
    false
}

/// Every run of consecutive digit groups is a candidate: `ref 12 4242 4242 4242 4242`.
fn stretch_has_card(stretch: &str) -> bool {
    let groups: Vec<&str> = stretch
        .split([' ', '-'])
        .filter(|g| !g.is_empty())
        .collect();
    for first in 0..groups.len() {
        let mut digits: Vec<u32> = Vec::new();
        for group in &groups[first..] {
            digits.extend(group.bytes().map(|b| u32::from(b - b'0')));
            if digits.len() > 19 {
                break;
            }
            if digits.len() >= 13 && (2..=6).contains(&digits[0]) && luhn(&digits) {
                return true;
            }
        }
    }
    false
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        // Every second digit from the right is doubled, its digits summed.
        .map(|(i, &d)| {
            if i % 2 == 1 {
                (d * 2) % 10 + (d * 2) / 10
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
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
        // `country` reads the list as 3-byte entries.
        assert!(COUNTRIES.split(' ').all(|c| c.len() == 2));
        assert_eq!(country("ad").as_deref(), Some("AD"));
        assert_eq!(country("ZW").as_deref(), Some("ZW"));
        // It searches the list by halves: sorted, and every two-letter code answered as a
        // scan of the list answers it.
        let listed: Vec<&str> = COUNTRIES.split(' ').collect();
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "not sorted");
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                let code = String::from_utf8(vec![a, b]).unwrap();
                let expected = listed.contains(&code.as_str()).then(|| code.clone());
                assert_eq!(country(&code.to_ascii_lowercase()), expected, "{code}");
            }
        }
    }

    #[test]
    fn phones() {
        assert_eq!(
            phone("+62 812-3456-7890").as_deref(),
            Some("+6281234567890")
        );
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
        assert!(card_like("order 4242424242424242, thanks"));
        assert!(card_like("ref 12 4242 4242 4242 4242"));
        assert!(!card_like("order 12345 of 2024-06-20"));
        assert!(card_like("6281234567899"), "Luhn-valid, 13 digits");
        assert!(
            !card_like("+6281234567899"),
            "the same digits after + are a phone"
        );
        assert!(!card_like("call +62 812 3456 7899"));
        assert!(card_like("4242424242424242😀"));
    }

    #[test]
    fn ids_and_bank_fields() {
        assert!(object_id("pi_123_abc"));
        assert!(!object_id("pi/../x"));
        assert!(!object_id(""));
        assert_eq!(bic("abnanl2a").as_deref(), Some("ABNANL2A"));
        assert_eq!(bic("abn_amro"), None);
    }
}
