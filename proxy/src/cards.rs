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
    // The authority too: HTTP/2's `:authority` is not a header, and becomes X-Forwarded-Host.
    let authority = parts.uri.authority().map(|a| percent_decode(a.as_str()));
    if text_has_card(&path) || authority.is_some_and(|a| text_has_card(&a)) {
        return Some(Hit::Path);
    }
    if let Some(query) = parts.uri.query() {
        if fields_have_card(form_urlencoded::parse(query.as_bytes()).map(Field::text)) {
            return Some(Hit::Query);
        }
    }
    // Each header on its own: unrelated digit-only headers next to each other (a port and a
    // timestamp a load balancer adds) are never joined.
    let header_has_card = |(name, value): (&http::HeaderName, &http::HeaderValue)| {
        !TRACE_HEADERS.contains(&name.as_str())
            && (text_has_card(name.as_str())
                || text_has_card(&String::from_utf8_lossy(value.as_bytes())))
    };
    if parts.headers.iter().any(header_has_card) {
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

/// Whether the request's body is encoded (`Content-Encoding` other than `identity`): such a
/// body cannot be scanned, so a route that scans refuses it.
pub fn encoded(parts: &Parts) -> bool {
    parts
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
}

/// A body as JSON when it parses as JSON (whatever it claims to be), as form parameters
/// when it says it is a form, else as text and, if shaped like one, as a form too.
fn body_has_card(form: bool, body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    let trimmed = body.trim_ascii_start();
    if matches!(trimmed.first(), Some(b'{' | b'[')) {
        let mut fields = JsonFields::default();
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        if serde::de::DeserializeSeed::deserialize(&mut fields, &mut deserializer).is_ok()
            && deserializer.end().is_ok()
        {
            return fields.card || fields_have_card(fields.fields);
        }
    }
    if form {
        return fields_have_card(form_urlencoded::parse(body).map(Field::text));
    }
    let text = String::from_utf8_lossy(body);
    text_has_card(&text)
        || (text.contains('=') && fields_have_card(form_urlencoded::parse(body).map(Field::text)))
}

/// A named value: text (query, form, JSON string), or a JSON number, which is never joined
/// with its neighbours (arrays of small counts are common, split card numbers in numbers
/// are not).
struct Field<'a> {
    name: std::borrow::Cow<'a, str>,
    value: std::borrow::Cow<'a, str>,
    joinable: bool,
}

impl<'a> Field<'a> {
    fn text((name, value): (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)) -> Self {
        Field {
            name,
            value,
            joinable: true,
        }
    }
}

/// Every scalar of a JSON document as a field, in document order, duplicate members included
/// (a map would keep only the last of them, and the others would be sent unseen); `card` is
/// set at once when a member name is itself a card number.
#[derive(Default)]
struct JsonFields {
    fields: Vec<Field<'static>>,
    card: bool,
    /// The member name the next value belongs to.
    name: String,
    depth: usize,
}

/// Nesting beyond this is refused as unreadable (serde_json stops at 128 anyway).
const MAX_JSON_DEPTH: usize = 64;

impl<'de> serde::de::DeserializeSeed<'de> for &mut JsonFields {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut JsonFields {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.number(v.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.number(v.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.number(v.to_string());
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.fields.push(Field {
            name: self.name.clone().into(),
            value: v.to_string().into(),
            joinable: true,
        });
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.enter::<A::Error>()?;
        while seq.next_element_seed(&mut *self)?.is_some() {}
        self.depth -= 1;
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.enter::<A::Error>()?;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            self.card |= text_has_card(&key);
            self.name = key.into_owned();
            map.next_value_seed(&mut *self)?;
        }
        self.depth -= 1;
        Ok(())
    }
}

impl JsonFields {
    fn number(&mut self, text: String) {
        self.fields.push(Field {
            name: self.name.clone().into(),
            value: text.into(),
            joinable: false,
        });
    }

    fn enter<E: serde::de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > MAX_JSON_DEPTH {
            return Err(E::custom("nested too deeply"));
        }
        Ok(())
    }
}

/// Names and values each scanned as text (values exempt by name and shape skipped), then
/// runs of adjacent short all-digit text values joined (`cc1=4111&cc2=1111…`).
fn fields_have_card<'a>(fields: impl IntoIterator<Item = Field<'a>>) -> bool {
    // Digits of the adjacent all-digit fields that may still end a card number: never more
    // than 19 digits in all, so each field costs O(1).
    let mut run: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    for field in fields {
        let (name, value) = (field.name.as_ref(), field.value.as_ref());
        if text_has_card(name) {
            return true;
        }
        let digits = only_digits(value);
        let exempt = exempt(name, digits.as_ref().map_or(usize::MAX, Vec::len));
        if !exempt && text_has_card(value) {
            return true;
        }
        match digits.filter(|d| field.joinable && !exempt && (2..=12).contains(&d.len())) {
            Some(digits) => {
                run.push_back(digits);
                while run.iter().map(Vec::len).sum::<usize>() > 19 {
                    run.pop_front();
                }
                if split_has_card(run.make_contiguous()) {
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

/// Whether a value is exempt by its parameter's name (the last segment: `a[b][amount]` →
/// `amount`) and fits that name's shape (`digits`: how many digits the value has, when it is
/// only digits): an amount or quantity of at most 12 digits, a phone number of at most 15, a
/// tax id of at most 14, a BIN of at most 8, last four digits of 4. Anything longer under
/// such a name is scanned like any value.
fn exempt(name: &str, digits: usize) -> bool {
    let last = name
        .trim_end_matches(']')
        .rsplit(['[', '.'])
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase();
    let most = match last.as_str() {
        "amount" | "quantity" => 12,
        "tax_id" => 14,
        "bin" => 8,
        "last4" => 4,
        _ if last.ends_with("_amount") || last.starts_with("amount_") => 12,
        _ if last.contains("phone") => 15,
        _ => return false,
    };
    digits <= most
}

/// Whether free text carries a card number anywhere.
pub fn text_has_card(text: &str) -> bool {
    // The common case, cheaply: ASCII text with fewer digits than the shortest card number
    // (13) carries none, however they are grouped.
    if text.is_ascii() && text.bytes().filter(u8::is_ascii_digit).count() < 13 {
        return false;
    }
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
            // After `+`, a phone number: E.164 has at most 15 digits.
            let phone = before == '+' && groups.iter().map(Vec::len).sum::<usize>() <= 15;
            if !phone && stretch_has_card(&groups, before.is_alphanumeric(), glued_after) {
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

/// A number a card network issues: its leading digits and length fit a network's ranges
/// (below), and it passes the Luhn check.
fn is_card(digits: &[u8]) -> bool {
    issued(digits) && luhn(digits)
}

/// Leading digits and lengths of the card networks: Visa (4; 13, 16, 19), Mastercard (51–55,
/// 2221–2720; 16), American Express (34, 37; 15), Diners (30, 36, 38, 39; 14, 16), Discover
/// and UnionPay and RuPay (60–65; 16–19), JCB (3528–3589; 16–19), Maestro (50, 56–58, 67;
/// 16–19; its rare 12–15 digit numbers are not covered), Mir (2200–2204; 16–19). A 14-digit
/// date-time order id or a 13-digit order number that is not a Visa number is not a card.
fn issued(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits[..n.min(digits.len())]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let (p2, p4) = (prefix(2), prefix(4));
    match digits.len() {
        13 => digits[0] == 4,
        14 => matches!(p2, 30 | 36 | 38 | 39),
        15 => matches!(p2, 34 | 37),
        16..=19 => {
            let visa = digits[0] == 4 && matches!(digits.len(), 16 | 19);
            let mastercard =
                digits.len() == 16 && ((51..=55).contains(&p2) || (2221..=2720).contains(&p4));
            let diners = digits.len() == 16 && matches!(p2, 30 | 36 | 38 | 39);
            visa || mastercard
                || diners
                || (60..=65).contains(&p2)
                || (3528..=3589).contains(&p4)
                || matches!(p2, 50 | 56..=58 | 67)
                || (2200..=2204).contains(&p4)
        }
        _ => false,
    }
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
    if c.is_ascii() {
        return c.is_ascii_digit().then(|| c as u8 - b'0');
    }
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
            // A byte that was not UTF-8 (a Latin-1 no-break space, say).
            | '\u{fffd}'
            // A form's encoded space, left as is where nothing decodes it (headers, text).
            | '+'
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
        let fields = |pairs: &[(&'static str, &'static str)]| {
            pairs
                .iter()
                .map(|(n, v)| Field::text(((*n).into(), (*v).into())))
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
            "081234567890"
        )])));
        assert!(!fields_have_card(fields(&[
            ("amount", "4200"),
            ("x", "1111")
        ])));
        // An exempt name does not carry a value of another shape through.
        assert!(fields_have_card(fields(&[(
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
        assert_eq!(
            find(&clean, br#"{"amount":4111111111111111}"#),
            Some(Hit::Body),
            "an amount of a card number's shape is scanned"
        );
        assert_eq!(
            find(&clean, b"metadata[bin]=4111111111111111"),
            Some(Hit::Body)
        );
        assert_eq!(
            find(
                &clean,
                b"email=jan%40example.nl&phone=%2B62+812+3456+7899&amount=424242424242\
                  &metadata[order]=12345678-1234-1234-1234-123456789012&tax_id=11444777000161"
            ),
            None
        );
        // Duplicate JSON members are each seen (a map keeps only the last).
        assert_eq!(
            find(&clean, br#"{"n":"4111 1111 1111 1111","n":"x"}"#),
            Some(Hit::Body)
        );
        // Numbers are not joined: a list of counts is not a split card number.
        assert_eq!(find(&clean, br#"{"q":[41,11,11,11,11,11,11,11]}"#), None);
        assert_eq!(
            find(&clean, br#"{"q":["4111","1111","1111","1111"]}"#),
            Some(Hit::Body)
        );
        // Headers are not joined either, and a phone after + is at most 15 digits.
        let lb = parts(
            "/v1/x",
            &[
                ("x-forwarded-port", "4111"),
                ("x-request-start", "111111111111"),
            ],
        );
        assert_eq!(find(&lb, b""), None);
        assert_eq!(
            find(&parts("/v1/x", &[("x-n", "4111+1111+1111+1111")]), b""),
            Some(Hit::Header)
        );
        assert_eq!(
            find(&parts("/v1/x", &[("x-n", "+1 4111 1111 1111 1111")]), b""),
            Some(Hit::Header)
        );
        // Not UTF-8: a Latin-1 no-break space between the groups.
        assert_eq!(
            find(&text, b"n 4111\xa01111\xa01111\xa01111"),
            Some(Hit::Body)
        );
        // HTTP/2's authority.
        assert_eq!(
            find(
                &parts("http://4111111111111111@shop.example/v1/x", &[]),
                b""
            ),
            Some(Hit::Path)
        );
        // Not issued: a 14-digit date-time id, a 13-digit non-Visa number.
        assert!(!text_has_card("20241203212530"));
        assert!(!text_has_card("5411111111115"));
    }
}
