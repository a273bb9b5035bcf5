//! The card-number detector: one check over everything a route receives (path, query string,
//! header names and values, body parameter names and values), run before anything is stored,
//! logged or sent, so a card number that reaches payproxy goes no further.
//!
//! A *card number* is 13–19 digits starting with 2–6 (the leading digits of the card networks)
//! that pass the Luhn check, written
//! - as one run of digits (`4111111111111111`), bounded by anything that is not a digit;
//! - in the groupings people and forms use: fours (`4111 1111 1111 1111`, the last group 1–4
//!   digits), American Express `4-6-5` and Diners `4-6-4`, separated by spaces, dashes, dots,
//!   slashes or underscores (any of them, up to three in a row);
//! - in any of those forms with full-width (`４１１１…`) or other Unicode decimal digits;
//! - split across adjacent fields whose values are only digits (`cc1=4111&cc2=1111…`).
//!
//! Exempt by design, and why they are safe:
//! - a stretch right after `+` is an E.164 phone number (`+62 812 3456 7899`), not a card;
//! - values of parameters named `amount`, `…_amount`, `amount_…`, `quantity`, `…phone…`,
//!   `tax_id`, `bin` and `last4` are not scanned (their names still are): amounts and counts
//!   are numbers the payment needs, phone numbers are checked as phones by the dialects,
//!   Brazilian tax ids (CPF/CNPJ, 11/14 digits) carry their own check digits and would match
//!   the Luhn check one time in ten, a BIN or last four digits is not a card number;
//! - longer runs of digits (20 and more) are identifiers, not card numbers; runs that start
//!   with 1 (millisecond timestamps) or 0 are not card numbers either, nor digits glued to
//!   letters (`ab12…`: hex ids, UUIDs);
//! - trace-context headers ([`TRACE_HEADERS`]: `traceparent`, B3, Datadog …) carry span and
//!   trace ids that tracing libraries make, 16 or 19 digits at times.
//!
//! What is found is never echoed: [`Hit`] says where (the kind of place), not what.

use http::request::Parts;

/// Trace-context headers: hex and decimal span and trace ids made by tracing libraries, which
/// are sometimes 16 or 19 digits long and pass Luhn one time in ten. Not scanned.
const TRACE_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "b3",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "sentry-trace",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "uber-trace-id",
];

/// Where a card number was found, the only thing said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// The request path.
    Path,
    /// The query string (a parameter name or value).
    Query,
    /// A header name or value.
    Header,
    /// The body (a parameter name or value, or free text).
    Body,
}

impl Hit {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Hit::Path => "path",
            Hit::Query => "query",
            Hit::Header => "header",
            Hit::Body => "body",
        }
    }

    /// A message for the storefront that says where, never what.
    pub fn message(self) -> String {
        format!(
            "The request carries a card number (in the {}). Raw card data is not accepted: \
             tokenize the card with your provider and send the token.",
            match self {
                Hit::Path => "path",
                Hit::Query => "query string",
                Hit::Header => "headers",
                Hit::Body => "body",
            }
        )
    }
}

/// The first place in the request that carries a card number, if any.
pub fn find(parts: &Parts, body: &[u8]) -> Option<Hit> {
    let path = percent_decode(parts.uri.path());
    if text_has_card(&path) {
        return Some(Hit::Path);
    }
    if let Some(query) = parts.uri.query() {
        if fields_have_card(form_urlencoded::parse(query.as_bytes())) {
            return Some(Hit::Query);
        }
    }
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !TRACE_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())));
    if fields_have_card(headers) {
        return Some(Hit::Header);
    }
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        });
    body_has_card(form, body).then_some(Hit::Body)
}

/// A body as JSON when it parses as JSON (whatever it claims to be), as form parameters
/// when it says it is a form, else as text and, if shaped like one, as a form too.
fn body_has_card(form: bool, body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    let trimmed = body.trim_ascii_start();
    if matches!(trimmed.first(), Some(b'{' | b'[')) {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
            let mut fields = Vec::new();
            return json_fields("", &value, &mut fields) || fields_have_card(fields);
        }
    }
    if form {
        return fields_have_card(form_urlencoded::parse(body));
    }
    let text = String::from_utf8_lossy(body);
    text_has_card(&text) || (text.contains('=') && fields_have_card(form_urlencoded::parse(body)))
}

/// Every scalar of a JSON document as (member name, value text), in document order; true
/// at once when a member name is itself a card number.
fn json_fields(name: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) -> bool {
    use serde_json::Value;
    match value {
        Value::Object(members) => members
            .iter()
            .any(|(key, member)| text_has_card(key) || json_fields(key, member, out)),
        Value::Array(items) => items.iter().any(|item| json_fields(name, item, out)),
        Value::String(text) => {
            out.push((name.to_string(), text.clone()));
            false
        }
        Value::Number(number) => {
            out.push((name.to_string(), number.to_string()));
            false
        }
        Value::Bool(_) | Value::Null => false,
    }
}

/// Names and values each scanned as text (exempt values skipped), then runs of adjacent
/// all-digit values joined.
fn fields_have_card<N: AsRef<str>, V: AsRef<str>>(
    fields: impl IntoIterator<Item = (N, V)>,
) -> bool {
    // Digits of the current run of adjacent all-digit fields.
    let mut run: Vec<Vec<u8>> = Vec::new();
    for (name, value) in fields {
        let (name, value) = (name.as_ref(), value.as_ref());
        if text_has_card(name) {
            return true;
        }
        let exempt = exempt(name);
        if !exempt && text_has_card(value) {
            return true;
        }
        match only_digits(value).filter(|d| !exempt && d.len() <= 12) {
            Some(digits) => {
                run.push(digits);
                if split_has_card(&run) {
                    return true;
                }
            }
            None => run.clear(),
        }
    }
    false
}

/// Some suffix of the run (two fields or more) joined is a card number.
fn split_has_card(run: &[Vec<u8>]) -> bool {
    (0..run.len().saturating_sub(1)).any(|first| {
        let joined: Vec<u8> = run[first..].concat();
        is_card(&joined)
    })
}

/// The value's digits when it is only digits and separators (and has a digit).
fn only_digits(value: &str) -> Option<Vec<u8>> {
    let mut digits = Vec::new();
    for c in value.trim().chars() {
        match digit(c) {
            Some(d) => digits.push(d),
            None if separator(c) => {}
            None => return None,
        }
    }
    (!digits.is_empty()).then_some(digits)
}

/// The last segment of a parameter name (`a[b][amount]` → `amount`), lower case.
fn exempt(name: &str) -> bool {
    let last = name
        .trim_end_matches(']')
        .rsplit(['[', '.'])
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    matches!(
        last.as_str(),
        "amount" | "quantity" | "tax_id" | "bin" | "last4"
    ) || last.ends_with("_amount")
        || last.starts_with("amount_")
        || last.contains("phone")
}

/// Whether free text carries a card number anywhere.
pub fn text_has_card(text: &str) -> bool {
    // Digit groups of the current stretch (digit groups joined by short separator runs).
    let mut groups: Vec<Vec<u8>> = Vec::new();
    let mut group: Vec<u8> = Vec::new();
    let mut separators = 0usize;
    // What came right before the stretch: `+` (a phone number) or a letter (an identifier).
    let mut before = '\0';
    let mut previous = '\0';
    for c in text.chars().chain(std::iter::once('\0')) {
        if let Some(d) = digit(c) {
            if group.is_empty() && groups.is_empty() {
                before = previous;
            }
            if separators > 0 && !group.is_empty() {
                groups.push(std::mem::take(&mut group));
            }
            separators = 0;
            group.push(d);
        } else if separator(c) && !group.is_empty() && separators < 3 {
            separators += 1;
        } else {
            if !group.is_empty() {
                groups.push(std::mem::take(&mut group));
            }
            // Digits glued to letters are part of an identifier (`ab12…`, hex ids, UUIDs).
            let glued_after = separators == 0 && c.is_alphanumeric();
            if before != '+' && stretch_has_card(&groups, before.is_alphanumeric(), glued_after) {
                return true;
            }
            groups.clear();
            separators = 0;
        }
        previous = c;
    }
    false
}

/// A stretch of digit groups carries a card number: one group that is one, or consecutive
/// groups in a card grouping that together are one. A group glued to letters before
/// (`glued_before`) cannot start one, nor one glued after (`glued_after`) end one.
fn stretch_has_card(groups: &[Vec<u8>], glued_before: bool, glued_after: bool) -> bool {
    let last = groups.len().saturating_sub(1);
    for first in usize::from(glued_before)..groups.len() {
        if is_card(&groups[first]) && !(glued_after && first == last) {
            return true;
        }
        let mut digits: Vec<u8> = Vec::new();
        for (n, group) in groups[first..].iter().enumerate() {
            digits.extend_from_slice(group);
            if digits.len() > 19 || !grouping_continues(&groups[first..], n) {
                break;
            }
            let ends_glued = glued_after && first + n == last;
            if n > 0 && !ends_glued && grouping_ends(&groups[first..=first + n]) && is_card(&digits)
            {
                return true;
            }
        }
    }
    false
}

/// Group `n` (0-based) keeps a card grouping going: four fours and then up to three
/// digits (16–19 digits), or 4-6-x.
fn grouping_continues(groups: &[Vec<u8>], n: usize) -> bool {
    let len = groups[n].len();
    match n {
        0 => len == 4,
        1 => len == 4 || len == 6,
        _ if groups[1].len() == 6 => n == 2 && (4..=5).contains(&len),
        2 | 3 => len == 4,
        4 => (1..=3).contains(&len),
        _ => false,
    }
}

/// The groups form a whole card grouping: 4-4-4-4, 4-4-4-4-x, 4-6-4 or 4-6-5.
fn grouping_ends(groups: &[Vec<u8>]) -> bool {
    if groups.len() == 3 && groups[1].len() == 6 {
        return (4..=5).contains(&groups[2].len());
    }
    (4..=5).contains(&groups.len()) && groups[..4].iter().all(|g| g.len() == 4)
}

/// 13–19 digits, starting 2–6, passing the Luhn check.
fn is_card(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && (2..=6).contains(&digits[0]) && luhn(digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        // Every second digit from the right is doubled, its digits summed.
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                (d * 2) % 10 + (d * 2) / 10
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// First code points of Unicode's blocks of ten decimal digits (ASCII, Arabic-Indic,
/// Devanagari and the other Indic scripts, Thai, Lao, Tibetan, Myanmar, full-width).
const ZEROS: &[u32] = &[
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x17E0, 0x1810, 0xFF10,
];

/// The value of a decimal digit in any of the scripts above, or the mathematical digits.
fn digit(c: char) -> Option<u8> {
    let code = c as u32;
    if (0x1D7CE..=0x1D7FF).contains(&code) {
        return Some(((code - 0x1D7CE) % 10) as u8);
    }
    ZEROS
        .iter()
        .find(|&&zero| (zero..zero + 10).contains(&code))
        .map(|&zero| (code - zero) as u8)
}

/// Characters people put between digit groups.
fn separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '-' | '.' | '/' | '_' | '\u{a0}' | '\u{2010}'
            ..='\u{2015}'
                | '\u{2212}'
                | '\u{3000}'
                | '\u{ff0d}'
                | '\u{ff0e}'
                | '\u{ff0f}'
                | '\u{ff3f}'
    )
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_in_free_text() {
        for text in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111.1111.1111.1111",
            "4111/1111/1111/1111",
            "4111_1111_1111_1111",
            "4111 - 1111 - 1111 - 1111",
            "３７８２ ８２２４６３ １０００５",
            "order 4111111111111111, thanks",
            "ref 12 4242 4242 4242 4242",
            "card:4111111111111111;",
            "5555-5555-5555-4444",
            "3782 822463 10005",
            "3056 930902 5904",
            "6011111111111117",
            "4222222222222",
            "4111 1111 1111 1111 111",
            // Fours going on past 19 digits: the first four groups are a card.
            "4111 1111 1111 1111 1111 1111",
            "\u{0664}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}",
        ] {
            assert!(text_has_card(text), "{text:?}");
        }
    }

    #[test]
    fn what_is_not_a_card_number() {
        for text in [
            "4111111111111112",     // Luhn fails
            "1234567812345670",     // no network starts with 1
            "1733245678901",        // a millisecond timestamp
            "+62 812 3456 7899 0",  // a phone number
            "+6281234567899",       // the same, compact
            "41111111111111110000", // 20 digits: an identifier
            "424242",               // too short
            "order 12345 of 2024-06-20",
            "12345678-1234-1234-1234-123456789012",
            "4242-42424242-4242", // not a card grouping
        ] {
            assert!(!text_has_card(text), "{text:?}");
        }
    }

    #[test]
    fn uuids_never_read_as_cards() {
        // All-digit UUIDs are the worst case for a grouping-based detector; random ones are
        // checked too (a Stripe SDK sends one as the Idempotency-Key of every POST).
        let mut n: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..50_000 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let digits = format!("{:032}", u128::from(n) * u128::from(n.rotate_left(17)));
            let d = &digits[digits.len() - 32..];
            let uuid = format!(
                "{}-{}-{}-{}-{}",
                &d[..8],
                &d[8..12],
                &d[12..16],
                &d[16..20],
                &d[20..]
            );
            assert!(!text_has_card(&uuid), "{uuid}");
            // The same bits as a random hex UUID, and as a W3C traceparent.
            let hex = format!(
                "{:032x}",
                (u128::from(n) << 64) | u128::from(n.rotate_left(29) ^ 0x5bd1_e995)
            );
            let uuid = format!(
                "{}-{}-4{}-a{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..]
            );
            assert!(!text_has_card(&uuid), "{uuid}");
            let traceparent = format!("00-{hex}-{}-01", &hex[..16]);
            let request = http::Request::builder()
                .header("traceparent", &traceparent)
                .header("x-datadog-trace-id", n.to_string())
                .body(())
                .unwrap();
            assert_eq!(find(&request.into_parts().0, b""), None, "{traceparent}");
        }
    }

    #[test]
    fn split_across_fields() {
        let fields = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(fields_have_card(fields(&[
            ("cc1", "4111"),
            ("cc2", "1111"),
            ("cc3", "1111"),
            ("cc4", "1111")
        ])));
        assert!(fields_have_card(fields(&[
            ("a", "x"),
            ("b", "4111111111"),
            ("c", "111111")
        ])));
        assert!(!fields_have_card(fields(&[
            ("cc1", "4111"),
            ("note", "and"),
            ("cc3", "111111111111")
        ])));
        assert!(
            !fields_have_card(fields(&[("amount", "4111111111"), ("c", "111111")])),
            "amounts are exempt"
        );
        assert!(fields_have_card(fields(&[(
            "metadata[4111111111111111]",
            "x"
        )])));
        assert!(!fields_have_card(fields(&[(
            "customer[phone]",
            "4111111111111111"
        )])));
    }

    #[test]
    fn requests() {
        let parts = |uri: &str, headers: &[(&str, &str)]| {
            let mut builder = http::Request::builder().uri(uri);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).unwrap().into_parts().0
        };
        let clean = parts(
            "/v1/payment_intents?expand[]=x",
            &[
                ("idempotency-key", "k"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        );
        let text = parts("/v1/x", &[("content-type", "text/plain")]);
        assert_eq!(find(&clean, b"amount=1000&currency=eur"), None);
        assert_eq!(
            find(&parts("/v1/x?card_number=4111111111111111", &[]), b""),
            Some(Hit::Query)
        );
        assert_eq!(
            find(&parts("/v1/x?n=4111%201111%201111%201111", &[]), b""),
            Some(Hit::Query)
        );
        assert_eq!(
            find(&parts("/v1/x/4111111111111111", &[]), b""),
            Some(Hit::Path)
        );
        assert_eq!(
            find(
                &parts("/v1/x", &[("x-card-number", "4111111111111111")]),
                b""
            ),
            Some(Hit::Header)
        );
        assert_eq!(
            find(&clean, b"metadata[note]=4111.1111.1111.1111"),
            Some(Hit::Body)
        );
        assert_eq!(
            find(&clean, "n=%EF%BC%94111111111111111".as_bytes()),
            Some(Hit::Body)
        );
        assert_eq!(
            find(&clean, br#"{"card":{"n":"4111 1111 1111 1111"}}"#),
            Some(Hit::Body)
        );
        assert_eq!(find(&clean, br#"{"n":4111111111111111}"#), Some(Hit::Body));
        assert_eq!(
            find(&clean, br#"{"a":"\u0034111111111111111"}"#),
            Some(Hit::Body)
        );
        assert_eq!(find(&text, b"<n>4111111111111111</n>"), Some(Hit::Body));
        assert_eq!(find(&text, b"n=4111%201111%201111%201111"), Some(Hit::Body));
        assert_eq!(find(&clean, br#"{"amount":4111111111111111}"#), None);
        assert_eq!(
            find(&clean, b"amount=4111111111111111&phone=4111111111111111"),
            None
        );
        assert_eq!(
            find(
                &clean,
                b"email=jan%40example.nl&phone=%2B62+812+3456+7899&amount=4111111111111111\
                  &metadata[order]=12345678-1234-1234-1234-123456789012"
            ),
            None
        );
    }
}
