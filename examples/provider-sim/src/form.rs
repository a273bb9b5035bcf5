//! Stripe-style form bodies: flat keys, `name[key]` maps and `name[]` / `name[0]` lists.

use std::collections::BTreeMap;

/// A decoded `application/x-www-form-urlencoded` body, pairs kept in order.
#[derive(Debug, Default)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Decode a body; bytes that are not UTF-8 are replaced, never rejected.
    pub(crate) fn parse(body: &[u8]) -> Self {
        Form {
            pairs: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The last value of a flat key, as Stripe does when a key repeats.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `name[key]=value` pairs as a map (list-style `name[]` and indices excluded).
    pub(crate) fn map(&self, name: &str) -> BTreeMap<String, String> {
        self.pairs
            .iter()
            .filter_map(|(k, v)| {
                let key = bracketed(k, name)?;
                let is_index = key.is_empty() || key.bytes().all(|b| b.is_ascii_digit());
                (!is_index).then(|| (key.to_owned(), v.clone()))
            })
            .collect()
    }

    /// Values of `name[]=v` or `name[0]=v`, in body order.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| {
                bracketed(k, name).is_some_and(|i| i.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// For `key` = `name[inner]`, the `inner` part.
fn bracketed<'a>(key: &'a str, name: &str) -> Option<&'a str> {
    key.strip_prefix(name)?
        .strip_prefix('[')?
        .strip_suffix(']')
        .filter(|inner| !inner.contains(['[', ']']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys() {
        let form = Form::parse(
            b"amount=100&metadata%5Border_id%5D=A1&metadata[note]=a+b&payment_method_types[]=card\
              &payment_method_types[1]=ideal&metadata[x][y]=no&amount=200",
        );
        assert_eq!(form.get("amount"), Some("200"));
        assert_eq!(form.get("currency"), None);
        let metadata = form.map("metadata");
        assert_eq!(metadata.len(), 2);
        assert_eq!(metadata["order_id"], "A1");
        assert_eq!(metadata["note"], "a b");
        assert_eq!(form.list("payment_method_types"), vec!["card", "ideal"]);
    }

    #[test]
    fn garbage_is_tolerated() {
        let form = Form::parse(b"\xff\xfe=%zz&&=&metadata[=1");
        assert!(form.map("metadata").is_empty());
    }
}
