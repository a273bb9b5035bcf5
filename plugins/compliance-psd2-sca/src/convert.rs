//! Exact currency conversion for the threshold comparison: no floating point, no rounding.
//!
//! A rate is a decimal string (`"0.85"` = 0.85 GBP per 1 EUR) kept as `units / 10^scale`.
//! An amount of `minor` units of a currency with exponent `e` and rate `r` is worth
//! `minor / (10^e × r)` euros, an exact fraction. Two such amounts are compared by
//! cross-multiplying numerators and denominators in 256-bit integers, so the decision at the
//! boundary (exactly €30.00 versus €30.01, ¥4 800 at 160 JPY/EUR, 9.990 KWD at 0.333) is exact.

use payproxy_plugin_sdk::currency;

/// Most decimal places a rate may have.
pub const MAX_RATE_DECIMALS: u32 = 12;
/// Most significant digits a rate may have (fits `u64`).
pub const MAX_RATE_DIGITS: usize = 18;

/// A positive exchange rate: `units / 10^scale` units of a currency per 1 EUR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    units: u64,
    scale: u32,
}

impl Rate {
    /// The rate of EUR itself.
    pub const ONE: Rate = Rate { units: 1, scale: 0 };

    /// Parse a positive decimal string (`"1"`, `"0.85"`, `"161.50"`); no sign, no exponent.
    pub fn parse(text: &str) -> Result<Rate, String> {
        const SHAPE: &str = "must be a positive decimal string such as \"0.85\"";
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(frac)
            || (text.contains('.') && frac.is_empty())
        {
            return Err(SHAPE.into());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > MAX_RATE_DECIMALS as usize {
            return Err(format!("has more than {MAX_RATE_DECIMALS} decimal places"));
        }
        let joined = format!("{whole}{frac}");
        let significant = joined.trim_start_matches('0');
        if significant.is_empty() {
            return Err("must be greater than zero".into());
        }
        if significant.len() > MAX_RATE_DIGITS {
            return Err(format!(
                "has more than {MAX_RATE_DIGITS} significant digits"
            ));
        }
        let units = significant.parse::<u64>().map_err(|_| SHAPE.to_string())?;
        Ok(Rate {
            units,
            scale: frac.len() as u32,
        })
    }
}

/// An amount in euros as an exact fraction `num / den` (both positive or `num` zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Euros {
    num: u128,
    den: u128,
}

impl Euros {
    /// `minor` units of `currency` at `rate`; `None` for an unknown currency or a negative
    /// amount.
    pub fn of(minor: i64, currency_code: &str, rate: Rate) -> Option<Euros> {
        let exponent = currency::exponent(currency_code)?;
        let minor = u64::try_from(minor).ok()?;
        // minor < 2^63 and 10^scale ≤ 10^12 < 2^40: the numerator fits in 103 bits.
        let num = u128::from(minor) * 10u128.pow(rate.scale);
        // 10^exponent ≤ 10^3 (ISO 4217) and units < 10^18: the denominator fits in 70 bits.
        let den = 10u128.pow(exponent) * u128::from(rate.units);
        Some(Euros { num, den })
    }

    /// True when `self` is strictly more than `other`.
    pub fn exceeds(&self, other: &Euros) -> bool {
        mul_wide(self.num, other.den) > mul_wide(other.num, self.den)
    }
}

/// The full 256-bit product of two `u128`s as `(high, low)`, ordered like the number.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a_hi, a_lo) = (a >> 64, a & MASK);
    let (b_hi, b_lo) = (b >> 64, b & MASK);
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    // At most 3 × (2^64 − 1): no overflow.
    let mid = (ll >> 64) + (lh & MASK) + (hl & MASK);
    let low = (ll & MASK) | (mid << 64);
    let high = hh + (lh >> 64) + (hl >> 64) + (mid >> 64);
    (high, low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Euros {
        Euros::of(minor, "EUR", Rate::ONE).unwrap()
    }

    #[test]
    fn rates_parse_exactly() {
        assert_eq!(
            Rate::parse("0.85"),
            Ok(Rate {
                units: 85,
                scale: 2
            })
        );
        assert_eq!(Rate::parse("1"), Ok(Rate::ONE));
        assert_eq!(Rate::parse("1.000"), Ok(Rate::ONE));
        assert_eq!(
            Rate::parse("161.50"),
            Ok(Rate {
                units: 1615,
                scale: 1
            })
        );
        assert_eq!(
            Rate::parse("0.000000000001"),
            Ok(Rate {
                units: 1,
                scale: 12
            })
        );
        for bad in ["", "0", "0.0", "-1", "1e3", "1.", ".5", "1,5", " 1", "abc"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Rate::parse("0.0000000000001")
            .unwrap_err()
            .contains("decimal places"));
        assert!(Rate::parse("1234567890123456789")
            .unwrap_err()
            .contains("significant"));
    }

    #[test]
    fn boundaries_are_exact_across_exponents() {
        let threshold = eur(3000);
        assert!(!eur(3000).exceeds(&threshold));
        assert!(eur(3001).exceeds(&threshold));
        let gbp = Rate::parse("0.85").unwrap();
        assert!(!Euros::of(2550, "GBP", gbp).unwrap().exceeds(&threshold));
        assert!(Euros::of(2551, "GBP", gbp).unwrap().exceeds(&threshold));
        let jpy = Rate::parse("160").unwrap();
        assert!(!Euros::of(4800, "JPY", jpy).unwrap().exceeds(&threshold));
        assert!(Euros::of(4801, "JPY", jpy).unwrap().exceeds(&threshold));
        let kwd = Rate::parse("0.333").unwrap();
        assert!(!Euros::of(9990, "KWD", kwd).unwrap().exceeds(&threshold));
        assert!(Euros::of(9991, "KWD", kwd).unwrap().exceeds(&threshold));
    }

    #[test]
    fn extremes_do_not_overflow() {
        let tiny = Rate::parse("0.000000000001").unwrap();
        let huge = Rate::parse("999999999999999999").unwrap();
        let max = Euros::of(i64::MAX, "KWD", tiny).unwrap();
        let min = Euros::of(1, "JPY", huge).unwrap();
        assert!(max.exceeds(&min));
        assert!(!min.exceeds(&max));
        assert!(!max.exceeds(&max));
        assert_eq!(Euros::of(-1, "EUR", Rate::ONE), None);
        assert_eq!(Euros::of(1, "XXX", Rate::ONE), None);
    }

    #[test]
    fn wide_products_match_small_ones() {
        assert_eq!(mul_wide(6, 7), (0, 42));
        assert_eq!(mul_wide(u128::MAX, 1), (0, u128::MAX));
        assert_eq!(mul_wide(u128::MAX, 2), (1, u128::MAX - 1));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
    }
}
