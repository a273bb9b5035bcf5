//! The CPF/CNPJ check the simulated PSP applies: written apart from the plugin's on purpose,
//! so the two check each other.

/// Whether `digits` (digits only) is a valid CPF (11) or CNPJ (14).
pub(super) fn valid(digits: &str) -> bool {
    let d: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != digits.len() || !(d.len() == 11 || d.len() == 14) || d.iter().all(|x| *x == d[0])
    {
        return false;
    }
    let n = d.len();
    let first = check(&d[..n - 2]);
    let second = check(&d[..n - 1]);
    d[n - 2] == first && d[n - 1] == second
}

/// One mod-11 check digit. CPF weights count down from `len + 1` to 2; CNPJ weights cycle
/// 2..=9 from the right.
fn check(digits: &[u32]) -> u32 {
    let cpf = digits.len() <= 10;
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let i = i as u32;
            let weight = if cpf { i + 2 } else { i % 8 + 2 };
            d * weight
        })
        .sum();
    match sum % 11 {
        0 | 1 => 0,
        r => 11 - r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid("52998224725"));
        assert!(valid("12345678909"));
        assert!(valid("11222333000181"));
        assert!(!valid("52998224724"));
        assert!(!valid("11111111111"));
        assert!(!valid("11222333000180"));
        assert!(!valid("529.982.247-25"), "digits only on the wire");
        assert!(!valid("5299822472"));
    }
}
