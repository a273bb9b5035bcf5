//! Stripe's form bodies: `application/x-www-form-urlencoded` pairs whose keys nest with
//! brackets (`metadata[order_id]`, `payment_method_types[]`, `a[b][c]`), and their encoding.

/// A decoded form: each key split into its segments (`a[b][]` → `["a", "b", ""]`).
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(Vec<String>, String)>,
}

impl Form {
    /// Decode a body. Bytes that are not UTF-8 are replaced; a key with unbalanced brackets
    /// is kept as one flat segment, so it matches nothing the dialect reads.
    pub fn parse(body: &[u8]) -> Form {
        let pairs = form_urlencoded::parse(body)
            .map(|(k, v)| (split_key(&k), v.into_owned()))
            .collect();
        Form { pairs }
    }

    /// The value at `path`; when a key repeats the last value wins (as on Stripe).
    pub fn get(&self, path: &[&str]) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k.iter().map(String::as_str).eq(path.iter().copied()))
            .map(|(_, v)| v.as_str())
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
                Some(entry) => entry.1 = value.clone(),
                None => out.push((name.to_string(), value.clone())),
            }
        }
        out
    }

    /// Values of `path[]=v` or `path[0]=v`, in body order.
    pub fn list(&self, path: &[&str]) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| child(k, path).is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit())))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether any key starts with `path`.
    pub fn has(&self, path: &[&str]) -> bool {
        self.pairs
            .iter()
            .any(|(k, _)| k.len() >= path.len() && k.iter().zip(path).all(|(a, b)| a == b))
    }

    /// Every pair, keys as segments.
    pub fn pairs(&self) -> impl Iterator<Item = (&[String], &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_slice(), v.as_str()))
    }
}

/// For a key of exactly `path.len() + 1` segments starting with `path`, the last one.
fn child<'a>(key: &'a [String], path: &[&str]) -> Option<&'a str> {
    if key.len() != path.len() + 1 || !key.iter().zip(path).all(|(a, b)| a == b) {
        return None;
    }
    key.last().map(String::as_str)
}

/// `a[b][c]` → `["a", "b", "c"]`; anything not in that shape stays one segment.
fn split_key(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_string()];
    };
    let mut segments = vec![key[..open].to_string()];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').and_then(|r| r.split_once(']'));
        match inner {
            Some((seg, tail)) if !seg.contains('[') && !segments[0].is_empty() => {
                segments.push(seg.to_string());
                rest = tail;
            }
            _ => return vec![key.to_string()],
        }
    }
    segments
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
        assert_eq!(split_key("a[b"), vec!["a[b"]);
        assert_eq!(split_key("a[b]c"), vec!["a[b]c"]);
        assert_eq!(split_key("[a]"), vec!["[a]"]);
        assert_eq!(split_key("a[[b]]"), vec!["a[[b]]"]);
        assert_eq!(split_key("a[]"), vec!["a", ""]);
        let form = Form::parse(b"\xff\xfe=%zz&&=&metadata[=1");
        assert!(form.map(&["metadata"]).is_empty());
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
