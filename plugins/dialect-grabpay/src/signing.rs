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

#[cfg(test)]
mod tests {
    use super::*;

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
