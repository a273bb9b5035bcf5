//! Payment records: what payproxy keeps of each payment a payment route handles, and the
//! list order storefronts page through (newest first, per route).
//!
//! Each store keeps two maps: id → [`PaymentEntry`], and an index whose keys sort by route,
//! then creation time, then id ([`index_key`]), so a page is one range scan. The paging
//! rules (Stripe's `starting_after` / `ending_before` / `created` bounds) live here, once,
//! over whatever ordered scan a store offers.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{Owner, StoreError};
use crate::plugin::storefront::{CardDetails, ListQuery, PaymentRecord};

/// Table name for errors and redb.
pub(super) const PAYMENTS: &str = "payments";
/// Table name of the list index.
pub(super) const PAYMENT_INDEX: &str = "payment_index";

/// A payment as payproxy keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentEntry {
    /// Route the payment was made on (lists are per route).
    pub route: String,
    /// Creation time, Unix milliseconds (list order).
    pub created_ms: u64,
    /// The provider that owns it and its reference there, once it was sent.
    pub owner: Option<Owner>,
    /// The record as the storefront dialect renders it.
    pub record: PaymentRecord,
    /// What the home provider said about the card token, when it was looked up.
    pub card: Option<CardDetails>,
    /// An operation on this payment that may have reached its provider and whose outcome
    /// is not known: only the retry of that request (which resumes this attempt) may
    /// operate on the payment until it is resolved. Set when an operation's lock is taken
    /// over from a holder that journaled this attempt and stopped (see
    /// [`payment_lock_key`](super::payment_lock_key)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<super::Attempt>,
    /// Provider notifications applied to this payment (`provider \0 event id`), the latest
    /// [`NOTICES_KEPT`]: a redelivered one is recognised and changes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Providers that answered a confirm of this payment "not processed" (payproxy moved on
    /// to another, or failed the payment): a charge one of them reports later for it is
    /// voided or refunded ([`LateCharge`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<PassedOver>,
    /// Charges passed-over providers reported later, and what payproxy did about them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_charges: Vec<LateCharge>,
    /// Amounts (minor units) of refunds payproxy made and counted whose provider
    /// notification has not arrived yet: a refund notification of one of these amounts
    /// confirms it instead of counting a second refund.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed_refunds: Vec<i64>,
    /// The provider reference the payment had when it was confirmed again after an attempt
    /// under it (failed, or still waiting for the shopper). A provider that keeps the
    /// reference across attempts (a Stripe PaymentIntent keeps its id) may notify the
    /// earlier attempt's decline late, under the reference of the attempt now under way:
    /// such a decline is checked with the provider's status query before it fails the
    /// payment (`payment::notices`). A provider that gives each attempt a reference of its
    /// own is not asked: its decline names the attempt it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_again_under: Option<String>,
}

/// A provider that answered a confirm of a payment "not processed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassedOver {
    /// The provider (config name).
    pub provider: String,
    /// The references it may have been sent with the payment (its dialect picks one: the
    /// merchant's reference, the payment's id, the provider idempotency key), which its
    /// notifications echo.
    pub sent: Vec<String>,
}

/// A charge a provider reported for a payment after answering that it had not processed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateCharge {
    /// The provider (config name).
    pub provider: String,
    /// Its reference of the charge.
    pub reference: String,
    /// Minor units it charged, when it said.
    pub amount: Option<i64>,
    /// `voided`, `refunded` or `failed` (left for an operator).
    pub result: String,
    /// When payproxy acted, Unix milliseconds.
    pub at_ms: u64,
}

/// How many applied notification ids a payment record keeps.
pub const NOTICES_KEPT: usize = 64;

impl PaymentEntry {
    /// A payment on `route` created at `created_ms`, as `record` says: not sent anywhere
    /// yet, nothing learned about its card, no notification applied.
    pub fn new(route: &str, created_ms: u64, record: PaymentRecord) -> PaymentEntry {
        PaymentEntry {
            route: route.to_string(),
            created_ms,
            owner: None,
            record,
            card: None,
            unresolved: None,
            notices: Vec::new(),
            passed_over: Vec::new(),
            late_charges: Vec::new(),
            unconfirmed_refunds: Vec::new(),
            confirmed_again_under: None,
        }
    }

    /// Its keys in the provider-reference index: its owner's reference; for each
    /// passed-over provider the references that provider may have been sent, which its
    /// notifications echo; and the same for a provider that may hold it under a reference
    /// payproxy does not know yet (see [`super::notices::unsure_key`]).
    pub fn reference_keys(&self) -> Vec<String> {
        use super::notices::{passed_over_key, reference_key, undone_key, unsure_key};
        let mut keys: Vec<String> = self
            .owner
            .iter()
            .filter(|o| !o.reference.is_empty())
            .map(|o| reference_key(&o.provider, &o.reference))
            .collect();
        for passed in &self.passed_over {
            for sent in &passed.sent {
                keys.push(passed_over_key(&passed.provider, sent));
            }
        }
        for late in &self.late_charges {
            if !late.reference.is_empty() && late.result != "failed" {
                keys.push(undone_key(&late.provider, &late.reference));
            }
        }
        // A provider that may have charged this payment under a reference payproxy does not
        // know: by the references it may have been sent.
        let unsure = match (&self.unresolved, &self.owner) {
            (Some(attempt), _) => Some((&attempt.provider, Some(&attempt.provider_key))),
            (None, Some(owner)) if owner.reference.is_empty() => Some((&owner.provider, None)),
            _ => None,
        };
        if let Some((provider, provider_key)) = unsure {
            let sent = [
                self.record.payment.merchant_reference.as_ref(),
                Some(&self.record.id),
                provider_key,
            ];
            for reference in sent.into_iter().flatten() {
                keys.push(unsure_key(provider, reference));
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// This entry's key in the list index.
    pub fn index_key(&self) -> String {
        index_key(&self.route, self.created_ms, &self.record.id)
    }
}

/// `route \0 created_ms (20 digits) \0 id`: sorts by route, time, id.
pub(super) fn index_key(route: &str, created_ms: u64, id: &str) -> String {
    format!("{route}\u{0}{created_ms:020}\u{0}{id}")
}

/// The index range of one route's payments created in `[from_ms, to_ms)`.
fn route_range(route: &str, from_ms: u64, to_ms: Option<u64>) -> (String, String) {
    let lo = format!("{route}\u{0}{from_ms:020}");
    let hi = match to_ms {
        Some(to) => format!("{route}\u{0}{to:020}"),
        None => format!("{route}\u{1}"),
    };
    (lo, hi)
}

/// A page: the entries to show (newest first) and whether more lie beyond it.
pub type Page = (Vec<PaymentEntry>, bool);

/// Where to scan, in which direction, for a query: the index bounds and whether the scan
/// runs oldest-first (an `ending_before` page is collected upwards, then reversed).
pub(super) struct Scan {
    pub lower: Bound<String>,
    pub upper: Bound<String>,
    pub ascending: bool,
}

/// The scan for `query` on `route`. `anchor` finds the index key of a listed id (the
/// `starting_after` / `ending_before` payment); an unknown anchor id is an empty page.
pub(super) fn scan(
    route: &str,
    query: &ListQuery,
    anchor: impl Fn(&str) -> Result<Option<String>, StoreError>,
) -> Result<Option<Scan>, StoreError> {
    let from_ms = query
        .created_gte
        .map(|s| u64::try_from(s).unwrap_or(0).saturating_mul(1000))
        .unwrap_or(0);
    let to_ms = query.created_lte.map(|s| {
        u64::try_from(s.saturating_add(1))
            .unwrap_or(0)
            .saturating_mul(1000)
    });
    let (lo, hi) = route_range(route, from_ms, to_ms);
    let (mut lower, mut upper) = (Bound::Included(lo), Bound::Excluded(hi));
    let mut ascending = false;
    if let Some(after) = &query.starting_after {
        match anchor(after)? {
            // Older than the anchor: below it.
            Some(key) => upper = tighter_upper(upper, key),
            None => return Ok(None),
        }
    } else if let Some(before) = &query.ending_before {
        match anchor(before)? {
            Some(key) => {
                lower = tighter_lower(lower, key);
                ascending = true;
            }
            None => return Ok(None),
        }
    }
    // Bounds that cross (created[gte] after created[lte], an anchor outside them) select
    // nothing; ordered maps refuse such a range.
    let crossed = match (&lower, &upper) {
        (Bound::Included(lo) | Bound::Excluded(lo), Bound::Excluded(hi) | Bound::Included(hi)) => {
            lo >= hi
        }
        _ => false,
    };
    if crossed {
        return Ok(None);
    }
    Ok(Some(Scan {
        lower,
        upper,
        ascending,
    }))
}

fn tighter_upper(current: Bound<String>, key: String) -> Bound<String> {
    match current {
        Bound::Excluded(hi) | Bound::Included(hi) if hi <= key => Bound::Excluded(hi),
        _ => Bound::Excluded(key),
    }
}

fn tighter_lower(current: Bound<String>, key: String) -> Bound<String> {
    match current {
        Bound::Included(lo) | Bound::Excluded(lo) if lo > key => Bound::Included(lo),
        _ => Bound::Excluded(key),
    }
}

/// Take up to `limit` matching entries from ids in scan order, and say whether one more
/// matches. `load` reads an entry by id; `customer` filters.
pub(super) fn collect(
    ids: impl Iterator<Item = Result<String, StoreError>>,
    query: &ListQuery,
    ascending: bool,
    load: impl Fn(&str) -> Result<Option<PaymentEntry>, StoreError>,
) -> Result<Page, StoreError> {
    let limit = query.limit.clamp(1, 100) as usize;
    let mut page = Vec::with_capacity(limit);
    let mut more = false;
    for id in ids {
        let id = id?;
        let Some(entry) = load(&id)? else { continue };
        if let Some(customer) = &query.customer {
            if entry.record.payment.customer.id.as_deref() != Some(customer.as_str()) {
                continue;
            }
        }
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(entry);
    }
    if ascending {
        page.reverse();
    }
    Ok((page, more))
}

/// The id at the end of an index key.
pub(super) fn id_of(key: &str) -> &str {
    key.rsplit('\u{0}').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_by_route_time_id() {
        let mut keys = [
            index_key("b", 1, "pi_a"),
            index_key("a", 20, "pi_a"),
            index_key("a", 3, "pi_z"),
            index_key("a", 3, "pi_b"),
        ];
        keys.sort();
        let ids: Vec<&str> = keys.iter().map(|k| id_of(k)).collect();
        assert_eq!(ids, ["pi_b", "pi_z", "pi_a", "pi_a"]);
        assert!(keys[2].starts_with("a\u{0}"));
        let (lo, hi) = route_range("a", 0, None);
        assert!(keys[..3].iter().all(|k| *k >= lo && *k < hi));
        assert!(keys[3] >= hi, "route b sorts after route a's range");
    }

    #[test]
    fn created_bounds_are_inclusive_seconds() {
        let query = ListQuery {
            limit: 10,
            starting_after: None,
            ending_before: None,
            created_gte: Some(5),
            created_lte: Some(7),
            customer: None,
        };
        let s = scan("r", &query, |_| Ok(None)).unwrap().unwrap();
        let inside = |k: &String| {
            (match &s.lower {
                Bound::Included(lo) => k >= lo,
                Bound::Excluded(lo) => k > lo,
                Bound::Unbounded => true,
            }) && (match &s.upper {
                Bound::Excluded(hi) => k < hi,
                Bound::Included(hi) => k <= hi,
                Bound::Unbounded => true,
            })
        };
        assert!(inside(&index_key("r", 5_000, "x")));
        assert!(inside(&index_key("r", 7_999, "x")));
        assert!(!inside(&index_key("r", 4_999, "x")));
        assert!(!inside(&index_key("r", 8_000, "x")));
    }
}
