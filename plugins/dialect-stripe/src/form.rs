//! Stripe's form bodies: `application/x-www-form-urlencoded` pairs whose keys nest with
//! brackets (`metadata[order_id]`, `payment_method_types[]`, `a[b][c]`), and their encoding.

use std::borrow::Cow;

/// A decoded form: each key split into its segments (`a[b][]` → `["a", "b", ""]`). Keys and
/// values borrow from the body unless decoding changed them (`+`, `%xx`, invalid UTF-8):
/// a payment's form is read once per request, and copying every value cost more than
/// reading it.
#[derive(Debug, Default, Clone)]
pub struct Form<'a> {
    pairs: Vec<(Vec<Cow<'a, str>>, Cow<'a, str>)>,
}

impl<'a> Form<'a> {
    /// Decode a body. Bytes that are not UTF-8 are replaced; a key with unbalanced brackets
    /// is kept as one flat segment, so it matches nothing the dialect reads.
    pub fn parse(body: &'a [u8]) -> Form<'a> {
        // The fast path: a UTF-8 body is split here, and only the `name=value` sequences
        // with something to decode (`+`, `%`) go through `form_urlencoded`; the others (long
        // descriptions and metadata values, usually) are taken as they are, which is what
        // decoding them would give. Scanning every byte several times was most of a parse.
        let Ok(text) = std::str::from_utf8(body) else {
            let pairs = form_urlencoded::parse(body)
                .map(|(k, v)| (split_key(k), v))
                .collect();
            return Form { pairs };
        };
        let pairs = text
            .split('&')
            .filter_map(|sequence| {
                let (name, value) = if sequence.bytes().any(|b| b == b'%' || b == b'+') {
                    // Stripe's SDKs escape a key's brackets (`metadata%5Border_id%5D`): when
                    // they are its only escapes, the segments are slices of the body, as for
                    // an unescaped key, and only the value is decoded (when it needs to be:
                    // from its `=` on, so `form_urlencoded` reads it as a nameless pair).
                    let (name, value) = sequence.split_once('=').unwrap_or((sequence, ""));
                    if let Some(key) = escaped_segments(name) {
                        if !value.bytes().any(|b| b == b'%' || b == b'+') {
                            return Some((key, Cow::Borrowed(value)));
                        }
                        let (_, value) =
                            form_urlencoded::parse(&sequence.as_bytes()[name.len()..]).next()?;
                        return Some((key, value));
                    }
                    form_urlencoded::parse(sequence.as_bytes()).next()?
                } else if sequence.is_empty() {
                    return None;
                } else {
                    let (name, value) = sequence.split_once('=').unwrap_or((sequence, ""));
                    (Cow::Borrowed(name), Cow::Borrowed(value))
                };
                Some((split_key(name), value))
            })
            .collect();
        Form { pairs }
    }

    /// The value at `path`; when a key repeats the last value wins (as on Stripe).
    pub fn get(&self, path: &[&str]) -> Option<&str> {
        // Last segment first: most of a payment's keys share their first one
        // (`payment_method_data`), and this runs for every field the dialect reads.
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| {
                k.len() == path.len() && k.iter().rev().map(|s| &**s).eq(path.iter().rev().copied())
            })
            .map(|(_, v)| &**v)
    }

    /// `path[key]=value` pairs with a named key (list entries excluded), first occurrence
    /// order, a repeated key keeping its last value.
    pub fn map(&self, path: &[&str]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (key, value) in &self.pairs {
            let Some(name) = child(key, path) else {
                continue;
            };
            if name.is_empty() || name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            match out.iter_mut().find(|(k, _)| k == name) {
                Some(entry) => entry.1 = value.to_string(),
                None => out.push((name.to_string(), value.to_string())),
            }
        }
        out
    }

    /// Values of `path[]=v` or `path[0]=v`, in body order.
    pub fn list(&self, path: &[&str]) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| child(k, path).is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit())))
            .map(|(_, v)| &**v)
            .collect()
    }

    /// Whether any key starts with `path`.
    pub fn has(&self, path: &[&str]) -> bool {
        self.pairs
            .iter()
            .any(|(k, _)| k.len() >= path.len() && k.iter().zip(path).all(|(a, b)| a == b))
    }

    /// Every pair, keys as segments.
    pub fn pairs(&self) -> impl Iterator<Item = (&[Cow<'a, str>], &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_slice(), &**v))
    }
}

/// For a key of exactly `path.len() + 1` segments starting with `path`, the last one.
fn child<'k>(key: &'k [Cow<'_, str>], path: &[&str]) -> Option<&'k str> {
    if key.len() != path.len() + 1 || !key.iter().zip(path).all(|(a, b)| a == b) {
        return None;
    }
    key.last().map(|s| &**s)
}

/// `a[b][c]` → `["a", "b", "c"]`; anything not in that shape stays one segment. The
/// segments of a key borrowed from the body borrow from it too.
fn split_key(key: Cow<'_, str>) -> Vec<Cow<'_, str>> {
    match key {
        Cow::Borrowed(flat) => segments(flat, Cow::Borrowed).unwrap_or_else(|| vec![key]),
        Cow::Owned(flat) => {
            segments(&flat, |s| Cow::Owned(s.to_string())).unwrap_or_else(|| vec![Cow::Owned(flat)])
        }
    }
}

/// The segments of a bracketed key, each made with `segment`; `None` for a key without
/// brackets or not in the `a[b][c]` shape.
fn segments<'k, T>(key: &'k str, segment: impl Fn(&'k str) -> T) -> Option<Vec<T>> {
    let open = key.find('[')?;
    if open == 0 {
        return None;
    }
    // Room for the usual depth (`a[b][c][d]`): growing from one cost a copy per segment.
    let mut out = Vec::with_capacity(4);
    out.push(segment(&key[..open]));
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let (seg, tail) = rest.strip_prefix('[').and_then(|r| r.split_once(']'))?;
        if seg.contains('[') {
            return None;
        }
        out.push(segment(seg));
        rest = tail;
    }
    Some(out)
}

/// The segments of a key in the `a%5Bb%5D%5Bc%5D` shape whose only escapes are its
/// brackets (either case), borrowed from it; `None` for any other key, which is then decoded
/// in full (and split as [`split_key`] splits it).
fn escaped_segments(name: &str) -> Option<Vec<Cow<'_, str>>> {
    if name.bytes().any(|b| matches!(b, b'+' | b'[' | b']')) {
        return None;
    }
    // The bracket a `%5B` / `%5D` at the start of `at` stands for.
    let bracket = |at: &str| match at.as_bytes().get(..3)? {
        [b'%', b'5', b'B' | b'b'] => Some('['),
        [b'%', b'5', b'D' | b'd'] => Some(']'),
        _ => None,
    };
    // Byte searches: the names are short, where `str::find`'s searcher cost more than it saved.
    let percent = |s: &str| s.bytes().position(|b| b == b'%');
    let open = percent(name)?;
    if open == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(4);
    out.push(Cow::Borrowed(&name[..open]));
    let mut rest = &name[open..];
    while !rest.is_empty() {
        if bracket(rest)? != '[' {
            return None;
        }
        rest = &rest[3..];
        let close = percent(rest)?;
        if bracket(&rest[close..])? != ']' {
            return None;
        }
        out.push(Cow::Borrowed(&rest[..close]));
        rest = &rest[close + 3..];
    }
    Some(out)
}

/// Builds a form body in the order fields are added.
#[derive(Debug, Default)]
pub struct FormBuilder {
    pairs: Vec<(String, String)>,
}

impl FormBuilder {
    /// An empty body.
    pub fn new() -> FormBuilder {
        FormBuilder::default()
    }

    /// Append `key=value` (brackets in `key` are sent percent-encoded, as Stripe's SDKs do).
    pub fn push(&mut self, key: &str, value: &str) -> &mut Self {
        self.pairs.push((key.to_string(), value.to_string()));
        self
    }

    /// Append when the value is present.
    pub fn push_opt(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.push(key, value);
        }
        self
    }

    /// The encoded body.
    pub fn finish(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.pairs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys() {
        let form = Form::parse(
            b"amount=100&metadata%5Border_id%5D=A1&metadata[note]=a+b&payment_method_types[]=card\
              &payment_method_types[1]=ideal&payment_method_data[billing_details][address][country]=NL\
              &metadata[x][y]=deep&amount=200&metadata[note]=c",
        );
        assert_eq!(form.get(&["amount"]), Some("200"));
        assert_eq!(form.get(&["currency"]), None);
        assert_eq!(
            form.map(&["metadata"]),
            vec![
                ("order_id".to_string(), "A1".to_string()),
                ("note".to_string(), "c".to_string())
            ]
        );
        assert_eq!(form.list(&["payment_method_types"]), vec!["card", "ideal"]);
        assert_eq!(
            form.get(&[
                "payment_method_data",
                "billing_details",
                "address",
                "country"
            ]),
            Some("NL")
        );
        assert!(form.has(&["payment_method_data", "billing_details"]));
        assert!(!form.has(&["payment_method_data", "card"]));
    }

    #[test]
    fn malformed_keys_stay_flat() {
        let split = |key: &str| {
            let borrowed = split_key(Cow::Borrowed(key));
            let owned = split_key(Cow::Owned(key.to_string()));
            assert_eq!(borrowed, owned, "{key}");
            borrowed.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(split("a[b"), vec!["a[b"]);
        assert_eq!(split("a[b]c"), vec!["a[b]c"]);
        assert_eq!(split("[a]"), vec!["[a]"]);
        assert_eq!(split("a[[b]]"), vec!["a[[b]]"]);
        assert_eq!(split("a[]"), vec!["a", ""]);
        assert_eq!(split("a"), vec!["a"]);
        assert_eq!(split("a[b][c]"), vec!["a", "b", "c"]);
        let form = Form::parse(b"\xff\xfe=%zz&&=&metadata[=1");
        assert!(form.map(&["metadata"]).is_empty());
    }

    /// What `Form::parse` gave before its fast path: every pair through `form_urlencoded`.
    fn decoded_by_the_crate(body: &[u8]) -> Vec<(Vec<String>, String)> {
        form_urlencoded::parse(body)
            .map(|(k, v)| {
                let key = split_key(k).iter().map(|s| s.to_string()).collect();
                (key, v.into_owned())
            })
            .collect()
    }

    fn decoded(body: &[u8]) -> Vec<(Vec<String>, String)> {
        Form::parse(body)
            .pairs()
            .map(|(k, v)| (k.iter().map(|s| s.to_string()).collect(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_fast_path_decodes_as_form_urlencoded_does() {
        for body in [
            &b"a=1&&b=&=c&d&e==f&g=h=i&"[..],
            b"metadata%5Bk%5D=a+b%2Bc&x=%zz%4&y=%E2%82%AC&z=%ff",
            b"k[a]=\xe2\x82&ok=1",
            b"\xff=1&b[c]=2",
            b"",
            b"&&&",
        ] {
            assert_eq!(decoded(body), decoded_by_the_crate(body), "{body:?}");
        }
    }

    #[test]
    fn every_short_body_decodes_as_form_urlencoded_does() {
        // Every body of up to 4 bytes from the characters that matter, a multi-byte
        // character and bytes that are not UTF-8 included.
        const BYTES: &[u8] = b"a[]&=%+5B\xe2\x82\xac\xff";
        let mut bodies: Vec<Vec<u8>> = vec![vec![]];
        let mut last: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|body| {
                    BYTES.iter().map(move |&b| {
                        let mut longer = body.clone();
                        longer.push(b);
                        longer
                    })
                })
                .collect();
            bodies.extend(last.iter().cloned());
        }
        for body in &bodies {
            assert_eq!(decoded(body), decoded_by_the_crate(body), "{body:?}");
        }
    }

    #[test]
    fn keys_with_escaped_brackets_decode_as_form_urlencoded_does() {
        // Every key of up to 4 pieces, escaped brackets in both cases among them, with values
        // that need decoding and values that do not.
        const PIECES: &[&str] = &["a", "%5B", "%5b", "%5D", "%5d", "%20", "[", "]", "+", "%"];
        let mut keys: Vec<String> = vec![String::new()];
        let mut last = keys.clone();
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|key| PIECES.iter().map(move |piece| format!("{key}{piece}")))
                .collect();
            keys.extend(last.iter().cloned());
        }
        for key in &keys {
            for value in ["1", "", "x%20y", "a+b", "%zz"] {
                let body = format!("{key}={value}&{key}&n%5Bm%5D={value}");
                let body = body.as_bytes();
                assert_eq!(decoded(body), decoded_by_the_crate(body), "{key}={value}");
            }
        }
        // The SDKs' shape is read without decoding: every segment borrows from the body.
        let body = b"payment_method_data%5Bcard%5D%5Btoken%5D=tok_visa&metadata%5b%5d=x\
                     &billing%5Bphone%5D=%2B62+8";
        let form = Form::parse(body);
        let keys: Vec<_> = form.pairs.iter().flat_map(|(k, _)| k.iter()).collect();
        assert_eq!(keys.len(), 7);
        assert!(
            keys.iter().all(|k| matches!(k, Cow::Borrowed(_))),
            "{keys:?}"
        );
        assert_eq!(
            form.get(&["payment_method_data", "card", "token"]),
            Some("tok_visa")
        );
        assert_eq!(form.list(&["metadata"]), vec!["x"]);
        assert_eq!(
            form.get(&["billing", "phone"]),
            Some("+62 8"),
            "the value decoded"
        );
    }

    #[test]
    fn builder_round_trips() {
        let body = FormBuilder::new()
            .push("metadata[order_id]", "A 1&2")
            .push_opt("x", None)
            .push("amount", "5")
            .finish();
        assert_eq!(body, "metadata%5Border_id%5D=A+1%262&amount=5");
        let form = Form::parse(body.as_bytes());
        assert_eq!(form.get(&["metadata", "order_id"]), Some("A 1&2"));
    }
}
