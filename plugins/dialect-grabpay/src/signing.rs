//! Request signing: the `Date` header and the HMAC-SHA256 `Authorization` value.
//!
//! The string to sign is
//! `METHOD \n content-type \n date \n path \n base64(SHA256(body)) \n` (each `\n` a line
//! feed, the body hash of the exact bytes sent, an empty body hashed too). The header is
//! `Authorization: <partner_id>:<base64(HMAC-SHA256(partner_secret, string to sign))>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::helpers::time::DateTime;
use sha2::{Digest, Sha256};

/// The parts of a request the signature covers.
pub struct Signed<'a> {
    /// Upper-case HTTP method.
    pub method: &'a str,
    /// The `Content-Type` header, empty when the request has none (GET).
    pub content_type: &'a str,
    /// The `Date` header, IMF-fixdate.
    pub date: &'a str,
    /// The request path as sent.
    pub path: &'a str,
    /// The exact body bytes.
    pub body: &'a [u8],
}

impl Signed<'_> {
    /// The text the HMAC is computed over.
    pub fn string_to_sign(&self) -> String {
        let body_hash = STANDARD.encode(Sha256::digest(self.body));
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            self.method, self.content_type, self.date, self.path, body_hash
        )
    }

    /// `base64(HMAC-SHA256(secret, string to sign))`.
    pub fn signature(&self, secret: &[u8]) -> String {
        // HMAC takes keys of any length: `new_from_slice` cannot fail for it, but is fallible
        // in its signature, so an (impossible) error yields an empty, always-rejected value.
        match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(self.string_to_sign().as_bytes());
                STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }
}

/// RFC 7231 IMF-fixdate (`Tue, 14 Nov 2023 22:13:20 GMT`) for a Unix time in milliseconds.
pub fn imf_fixdate(now_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = DateTime::from_unix_ms(now_ms, 0);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday as usize],
        t.day,
        MONTHS[(t.month - 1) as usize],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// Unix seconds of an IMF-fixdate (`Tue, 14 Nov 2023 22:13:20 GMT`), the format
/// [`imf_fixdate`] writes; `None` for anything else (the weekday must match the date).
pub fn parse_imf_fixdate(text: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let number = |part: &str, len: usize| -> Option<u64> {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())?
    };
    let mut parts = text.split(' ');
    let weekday = parts.next()?.strip_suffix(',')?;
    let day = number(parts.next()?, 2)?;
    let month = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let year = number(parts.next()?, 4)?;
    let mut clock = parts.next()?.split(':');
    let hour = number(clock.next()?, 2)?;
    let minute = number(clock.next()?, 2)?;
    let second = number(clock.next()?, 2)?;
    if parts.next()? != "GMT" || parts.next().is_some() || clock.next().is_some() {
        return None;
    }
    if year < 1970 || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // days_from_civil (Howard Hinnant), for years from 1970 on.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    // 1970-01-01 was a Thursday; this also refuses dates that do not exist (31 Feb).
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let check = DateTime::from_unix_ms(secs * 1000, 0);
    (DAYS[((days + 3) % 7) as usize] == weekday && check.day == day && check.month == month)
        .then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixdates_round_trip() {
        for secs in [0, 951_782_400, 1_700_000_000, 1_709_210_096, 4_102_444_799] {
            assert_eq!(
                parse_imf_fixdate(&imf_fixdate(secs * 1000)),
                Some(secs),
                "{secs}"
            );
        }
        for bad in [
            "",
            "Tue, 14 Nov 2023 22:13:20",
            "Wed, 14 Nov 2023 22:13:20 GMT",
            "Tue, 14 Nov 2023 22:13:20 UTC",
            "Tue, 14 Nov 2023 22:13 GMT",
            "Tue 14 Nov 2023 22:13:20 GMT",
            "Tue, 4 Nov 2023 22:13:20 GMT",
            "Sat, 31 Feb 2024 00:00:00 GMT",
            "Tue, 14 Nov 2023 22:13:20 GMT x",
        ] {
            assert_eq!(parse_imf_fixdate(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_match_python_email_utils() {
        // Expected values from `email.utils.formatdate(t, usegmt=True)`.
        for (secs, want) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 GMT"),
            (1_709_210_096, "Thu, 29 Feb 2024 12:34:56 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ] {
            assert_eq!(imf_fixdate(secs * 1000 + 999), want, "{secs}");
        }
    }

    #[test]
    fn signature_matches_an_independent_computation() {
        // Computed with Python's hmac/hashlib/base64 over the same string to sign:
        // body hash xgWwoFSMtz6QgHwtjeVcXKvlgQ4xJdb/nYqpORRxwHM=.
        let signed = Signed {
            method: "POST",
            content_type: "application/json",
            date: "Tue, 14 Nov 2023 22:13:20 GMT",
            path: "/grabpay/v2/charge/init",
            body: br#"{"partnerTxID":"abc","amount":1000}"#,
        };
        assert_eq!(
            signed.string_to_sign(),
            "POST\napplication/json\nTue, 14 Nov 2023 22:13:20 GMT\n/grabpay/v2/charge/init\n\
             xgWwoFSMtz6QgHwtjeVcXKvlgQ4xJdb/nYqpORRxwHM=\n"
        );
        assert_eq!(
            signed.signature(b"sim-secret-sim-sea"),
            "kZSWkXYVzKBjcfzrSSTFngXVGKrU6q0ex97ZKQw8LI8="
        );
        assert_ne!(
            signed.signature(b"another-secret"),
            signed.signature(b"sim-secret-sim-sea")
        );
    }
}
