//! Brazilian tax ids: CPF (people, 11 digits) and CNPJ (companies, 14 digits), each ending in
//! two mod-11 check digits.
//!
//! A single changed digit is always caught when the first check digit is not 0. When it is 0,
//! its remainder was 0 or 1 (both give 0), and a change that moves the remainder to the other
//! of the two leaves it 0. The second check digit does not always catch that: in a CPF the
//! leading digit weighs 11 (≡ 0) in the second sum, so `102.908.985-01` and `202.908.985-01`
//! are both valid. No CNPJ weight is 0 mod 11, so a CNPJ hides a change only when both of its
//! check digits are 0.

/// A valid tax id, digits only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaxId {
    /// Cadastro de Pessoas Físicas.
    Cpf(String),
    /// Cadastro Nacional da Pessoa Jurídica.
    Cnpj(String),
}

/// Why a tax id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaxIdError {
    /// Not 11 or 14 digits (separators `.`, `-`, `/` and spaces allowed).
    Format,
    /// All digits equal (`111.111.111-11`): passes the check, never issued.
    Repeated,
    /// The check digits do not match.
    CheckDigits,
}

const CPF_WEIGHTS: [u32; 10] = [11, 10, 9, 8, 7, 6, 5, 4, 3, 2];
const CNPJ_WEIGHTS: [u32; 13] = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];

/// Parse `123.456.789-09`, `12345678909`, `11.222.333/0001-81` …
pub fn parse(raw: &str) -> Result<TaxId, TaxIdError> {
    let mut digits = Vec::with_capacity(14);
    for c in raw.trim().chars() {
        match c {
            '0'..='9' => digits.push(c as u8 - b'0'),
            '.' | '-' | '/' | ' ' => {}
            _ => return Err(TaxIdError::Format),
        }
    }
    let (weights, cpf): (&[u32], bool) = match digits.len() {
        11 => (&CPF_WEIGHTS, true),
        14 => (&CNPJ_WEIGHTS, false),
        _ => return Err(TaxIdError::Format),
    };
    if digits.iter().all(|d| *d == digits[0]) {
        return Err(TaxIdError::Repeated);
    }
    let body = digits.len() - 2;
    if check_digits_for(&digits[..body], weights) != [digits[body], digits[body + 1]] {
        return Err(TaxIdError::CheckDigits);
    }
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    Ok(if cpf {
        TaxId::Cpf(text)
    } else {
        TaxId::Cnpj(text)
    })
}

/// The two check digits of a CPF (9 digits) or CNPJ (12 digits) body.
pub fn check_digits(body: &[u8]) -> [u8; 2] {
    let weights: &[u32] = if body.len() == 9 {
        &CPF_WEIGHTS
    } else {
        &CNPJ_WEIGHTS
    };
    check_digits_for(body, weights)
}

/// Mod-11 with the weights aligned to the right: the first check digit weighs the body with
/// the rightmost `body.len()` weights, the second weighs body + first digit with one more.
fn check_digits_for(body: &[u8], weights: &[u32]) -> [u8; 2] {
    let digit = |digits: &[u8]| {
        let w = &weights[weights.len() - digits.len()..];
        let sum: u32 = digits.iter().zip(w).map(|(d, w)| u32::from(*d) * w).sum();
        let r = sum % 11;
        if r < 2 {
            0
        } else {
            (11 - r) as u8
        }
    };
    let first = digit(body);
    let mut with_first = body.to_vec();
    with_first.push(first);
    [first, digit(&with_first)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids() {
        assert_eq!(
            parse("529.982.247-25"),
            Ok(TaxId::Cpf("52998224725".into()))
        );
        assert_eq!(parse("52998224725"), Ok(TaxId::Cpf("52998224725".into())));
        assert_eq!(
            parse("123.456.789-09"),
            Ok(TaxId::Cpf("12345678909".into()))
        );
        assert_eq!(
            parse("11.222.333/0001-81"),
            Ok(TaxId::Cnpj("11222333000181".into()))
        );
        assert_eq!(
            parse(" 11222333000181 "),
            Ok(TaxId::Cnpj("11222333000181".into()))
        );
    }

    #[test]
    fn bad_ids() {
        assert_eq!(parse("529.982.247-24"), Err(TaxIdError::CheckDigits));
        assert_eq!(parse("111.111.111-11"), Err(TaxIdError::Repeated));
        assert_eq!(parse("00000000000000"), Err(TaxIdError::Repeated));
        assert_eq!(parse("11.222.333/0001-80"), Err(TaxIdError::CheckDigits));
        assert_eq!(parse("5299822472"), Err(TaxIdError::Format));
        assert_eq!(parse("529x982x247x25"), Err(TaxIdError::Format));
        assert_eq!(parse(""), Err(TaxIdError::Format));
    }

    #[test]
    fn check_digit_generation() {
        assert_eq!(check_digits(&[5, 2, 9, 9, 8, 2, 2, 4, 7]), [2, 5]);
        assert_eq!(check_digits(&[1, 1, 2, 2, 2, 3, 3, 3, 0, 0, 0, 1]), [8, 1]);
    }

    /// The documented blind spot exists, even with a second check digit that is not 0.
    #[test]
    fn the_zero_first_check_digit_blind_spot_is_real() {
        assert_eq!(
            parse("102.908.985-01"),
            Ok(TaxId::Cpf("10290898501".into()))
        );
        assert_eq!(
            parse("202.908.985-01"),
            Ok(TaxId::Cpf("20290898501".into()))
        );
    }

    /// Bodies spread evenly over the CPF and the CNPJ ranges, with a first check digit other
    /// than 0: each single-digit change, check digits included, is refused.
    #[test]
    fn a_first_check_digit_other_than_zero_catches_every_change() {
        for (len, stride) in [(9, 99_991u64), (12, 99_990_001)] {
            let mut checked = 0;
            for n in (0..10u64.pow(len)).step_by(stride as usize) {
                let body: Vec<u8> = format!("{n:0width$}", width = len as usize)
                    .bytes()
                    .map(|b| b - b'0')
                    .collect();
                let [a, b] = check_digits(&body);
                if a == 0 {
                    continue;
                }
                let mut id = body;
                id.extend([a, b]);
                for i in 0..id.len() {
                    for delta in 1..10 {
                        let mut changed = id.clone();
                        changed[i] = (changed[i] + delta) % 10;
                        let text: String = changed.iter().map(|d| char::from(b'0' + d)).collect();
                        assert!(parse(&text).is_err(), "{text} is accepted");
                    }
                }
                checked += 1;
            }
            assert!(checked > 8_000, "{len}: {checked}");
        }
    }
}
