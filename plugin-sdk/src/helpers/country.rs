//! ISO 3166-1 country codes.

/// True when `code` has the shape of an ISO 3166-1 alpha-2 code: two ASCII letters, any case.
/// (Whether the country exists is not checked.)
pub fn is_alpha2(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_ascii_letters() {
        for ok in ["ID", "nl", "Br"] {
            assert!(is_alpha2(ok), "{ok}");
        }
        for bad in ["", "I", "IDN", "I1", "*", "É", "  "] {
            assert!(!is_alpha2(bad), "{bad:?}");
        }
    }
}
