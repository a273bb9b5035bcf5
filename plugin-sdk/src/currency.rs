//! ISO 4217 currencies: minor-unit exponents and exact conversion between minor units and
//! decimal strings (`1050` EUR ↔ `"10.50"`, `1050` JPY ↔ `"1050"`, `1050` KWD ↔ `"1.050"`).

/// Minor-unit exponent of an ISO 4217 currency code (case-insensitive); `None` if unknown.
pub fn exponent(code: &str) -> Option<u32> {
    // Every code is three letters and the table is sorted (a test checks both): no copy of
    // the code and no walk through the table, for a lookup each payment makes several times.
    let code: [u8; 3] = code.as_bytes().try_into().ok()?;
    let code = code.map(|b| b.to_ascii_uppercase());
    let found = CURRENCIES
        .binary_search_by(|(c, _)| c.as_bytes().cmp(&code[..]))
        .ok()?;
    Some(CURRENCIES[found].1)
}

/// The upper-case code if it is a known ISO 4217 currency.
pub fn normalise(code: &str) -> Option<String> {
    exponent(code).map(|_| code.to_ascii_uppercase())
}

/// Format minor units as a decimal string with the currency's exponent.
pub fn to_decimal(minor: i64, code: &str) -> Option<String> {
    let exp = exponent(code)?;
    if exp == 0 {
        return Some(minor.to_string());
    }
    let scale = 10i64.pow(exp);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale_u = scale.unsigned_abs();
    Some(format!(
        "{sign}{}.{:0width$}",
        abs / scale_u,
        abs % scale_u,
        width = exp as usize
    ))
}

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    /// Not an ISO 4217 code we know.
    UnknownCurrency,
    /// More decimals than the currency has (e.g. `10.5` JPY, `1.0001` KWD).
    WrongExponent {
        /// Decimals the currency allows.
        allowed: u32,
    },
    /// Not a decimal number, negative, or too large.
    Invalid,
}

impl std::fmt::Display for AmountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmountError::UnknownCurrency => write!(f, "unknown currency"),
            AmountError::WrongExponent { allowed } => {
                write!(
                    f,
                    "amount has more than {allowed} decimal places for this currency"
                )
            }
            AmountError::Invalid => write!(f, "amount is not a valid non-negative decimal"),
        }
    }
}

/// Parse a non-negative decimal string into minor units, refusing extra precision.
pub fn from_decimal(text: &str, code: &str) -> Result<i64, AmountError> {
    let exp = exponent(code).ok_or(AmountError::UnknownCurrency)?;
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(AmountError::Invalid);
    }
    if text.contains('.') && frac.is_empty() {
        return Err(AmountError::Invalid);
    }
    let significant = frac.trim_end_matches('0');
    if significant.len() as u32 > exp {
        return Err(AmountError::WrongExponent { allowed: exp });
    }
    let whole: i64 = whole.parse().map_err(|_| AmountError::Invalid)?;
    let mut minor_frac: i64 = 0;
    for i in 0..exp as usize {
        let digit = significant
            .as_bytes()
            .get(i)
            .map(|b| i64::from(b - b'0'))
            .unwrap_or(0);
        minor_frac = minor_frac * 10 + digit;
    }
    whole
        .checked_mul(10i64.pow(exp))
        .and_then(|w| w.checked_add(minor_frac))
        .ok_or(AmountError::Invalid)
}

/// ISO 4217 active codes and their minor-unit exponents.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(exponent("jpy"), Some(0));
        assert_eq!(exponent("EUR"), Some(2));
        assert_eq!(exponent("KWD"), Some(3));
        assert_eq!(exponent("XXX"), None);
        assert_eq!(exponent("eUr"), Some(2));
        for other in ["", "EU", "EURO", "€UR", "E\u{0}R"] {
            assert_eq!(exponent(other), None, "{other:?}");
        }
    }

    #[test]
    fn every_listed_code_is_found() {
        // The lookup is a binary search over three-letter codes: the table must stay so.
        assert!(
            CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no repeats"
        );
        for (code, exp) in CURRENCIES {
            assert_eq!(code.len(), 3, "{code}");
            assert_eq!(exponent(code), Some(*exp), "{code}");
            assert_eq!(exponent(&code.to_ascii_lowercase()), Some(*exp), "{code}");
        }
    }

    #[test]
    fn decimal_round_trips() {
        assert_eq!(to_decimal(1050, "EUR").as_deref(), Some("10.50"));
        assert_eq!(to_decimal(1050, "JPY").as_deref(), Some("1050"));
        assert_eq!(to_decimal(1050, "KWD").as_deref(), Some("1.050"));
        assert_eq!(to_decimal(5, "EUR").as_deref(), Some("0.05"));
        for (text, code, minor) in [
            ("10.50", "EUR", 1050),
            ("10.5", "EUR", 1050),
            ("1050", "JPY", 1050),
            ("1.05", "KWD", 1050),
            ("7", "EUR", 700),
        ] {
            assert_eq!(from_decimal(text, code), Ok(minor), "{text} {code}");
        }
    }

    #[test]
    fn wrong_exponents_and_garbage_are_refused() {
        assert_eq!(
            from_decimal("10.5", "JPY"),
            Err(AmountError::WrongExponent { allowed: 0 })
        );
        assert_eq!(
            from_decimal("1.0001", "KWD"),
            Err(AmountError::WrongExponent { allowed: 3 })
        );
        assert_eq!(
            from_decimal("10.00", "JPY"),
            Ok(10),
            "trailing zeros carry no precision"
        );
        assert_eq!(from_decimal("-1", "EUR"), Err(AmountError::Invalid));
        assert_eq!(from_decimal("1e3", "EUR"), Err(AmountError::Invalid));
        assert_eq!(from_decimal("1.", "EUR"), Err(AmountError::Invalid));
        assert_eq!(from_decimal("1", "ABC"), Err(AmountError::UnknownCurrency));
        assert_eq!(
            from_decimal("99999999999999999999", "EUR"),
            Err(AmountError::Invalid)
        );
    }
}
