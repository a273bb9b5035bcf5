//! The audit trail: one JSON line per payment decision on a payment route — approved,
//! declined, pending, refused (at authentication, card-data check, ingress, idempotency,
//! compliance, routing or attempt), replayed — with what decided it. Phases note what they
//! did in the request's [`Draft`]; the line is written once, when the answer is known.
//!
//! Lines go to their own file (`log.audit_path`, appended, one `write` per line) or, without
//! one, to the main log under the target `payproxy::audit`. They carry ids, names, digests,
//! codes and classes only: never a body, a header value, a secret or a card number. The
//! fields are documented in `docs/audit.md`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// Bytes reserved for an audit line before it is written: more than a charge's line takes
/// (1,116 bytes for a charge through three compliance plugins and a router, each named with
/// its sha256, in the benchmark's config).
const LINE_CAPACITY: usize = 2048;

/// Where audit lines go.
pub struct AuditLog {
    file: Option<(PathBuf, Mutex<File>)>,
}

impl AuditLog {
    /// Audit lines in the main log.
    pub fn to_log() -> AuditLog {
        AuditLog { file: None }
    }

    /// Audit lines appended to `path` (created with mode 0640 when missing).
    pub fn to_file(path: &Path) -> Result<AuditLog, String> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        let file = options
            .open(path)
            .map_err(|e| format!("audit log {}: {e}", path.display()))?;
        Ok(AuditLog {
            file: Some((path.to_path_buf(), Mutex::new(file))),
        })
    }

    /// Write one line. A failed write is logged (the payment itself already happened).
    pub(crate) fn write(&self, line: &Line<'_>) {
        // Room for a whole line: serialising into a string that starts empty reallocated it
        // several times per payment.
        let mut text = Vec::with_capacity(LINE_CAPACITY);
        if serde_json::to_writer(&mut text, line).is_err() {
            return;
        }
        match &self.file {
            None => {
                let text = String::from_utf8_lossy(&text);
                tracing::info!(target: crate::telemetry::AUDIT_TARGET, "{text}")
            }
            Some((path, file)) => {
                text.push(b'\n');
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = file.write_all(&text) {
                    tracing::error!(path = %path.display(), error = %e, "could not write an audit line");
                }
            }
        }
    }
}

/// What the phases of one request noted for its audit line.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    /// The phase running now: where a refusal happened.
    pub stage: &'static str,
    pub operation: Option<String>,
    pub payment: Option<String>,
    /// A refund's own id (its payment is `payment`).
    pub refund: Option<String>,
    pub provider: Option<String>,
    pub reference: Option<String>,
    /// `forwarded` (the storefront's request, unchanged, to a provider of its dialect) or
    /// `translated` (encoded by the provider's dialect).
    pub path: Option<&'static str>,
    pub outcome: Option<String>,
    pub refusal: Option<Refused>,
    pub idempotency: Option<&'static str>,
    pub plugins: Vec<PluginNote>,
    pub router: Option<RouterNote>,
    pub attempts: Vec<AttemptNote>,
}

/// Where and why a payment was refused.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Refused {
    pub stage: &'static str,
    pub code: String,
}

/// A compliance plugin's verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PluginNote {
    pub name: String,
    pub sha256: String,
    pub verdict: &'static str,
    pub rule: String,
}

/// The router's decision.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RouterNote {
    /// The router plugin, or `static` (no router: the route's order).
    pub plugin: String,
    pub sha256: Option<String>,
    /// `ordered`, `rejected`, `failed_open` or `static`.
    pub decision: &'static str,
    pub order: Vec<String>,
}

/// One provider attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AttemptNote {
    pub provider: String,
    /// `forward`, `send`, `resend` or `status`.
    pub kind: &'static str,
    /// The failover class (`processed`, `declined`, `not_sent`, `ambiguous`, …).
    pub class: &'static str,
    /// The provider's HTTP status, when it answered.
    pub status: Option<u16>,
}

/// One audit line.
#[derive(Debug, Serialize)]
pub(crate) struct Line<'a> {
    pub ts: String,
    pub event: &'static str,
    pub route: &'a str,
    pub operation: Option<&'a str>,
    pub payment: Option<&'a str>,
    pub refund: Option<&'a str>,
    pub decision: String,
    pub status: u16,
    pub provider: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub path: Option<&'static str>,
    pub replay: bool,
    pub idempotency: &'static str,
    pub refusal: Option<&'a Refused>,
    pub ingress: Ingress<'a>,
    pub compliance: &'a [PluginNote],
    pub router: Option<&'a RouterNote>,
    pub attempts: &'a [AttemptNote],
    pub trace_id: Option<String>,
}

/// The storefront dialect that read the request.
#[derive(Debug, Serialize)]
pub(crate) struct Ingress<'a> {
    pub plugin: &'a str,
    pub sha256: Option<&'a str>,
}

impl Draft {
    /// The audit line for a request answered with `status`.
    pub(crate) fn line<'a>(
        &'a self,
        route: &'a str,
        ingress: Ingress<'a>,
        status: u16,
    ) -> Line<'a> {
        let replay = self.idempotency == Some("replay");
        // What happened to the money first: an outcome noted stays the decision even when
        // rendering the answer failed afterwards (the refusal then says what the storefront
        // got instead).
        let decision = match (replay, &self.outcome, &self.refusal) {
            (true, _, _) => "replayed".to_string(),
            (false, Some(outcome), _) => outcome.clone(),
            (false, None, Some(_)) => "refused".to_string(),
            (false, None, None) => "unknown".to_string(),
        };
        Line {
            ts: now(),
            event: "payment",
            route,
            operation: self.operation.as_deref(),
            payment: self.payment.as_deref(),
            refund: self.refund.as_deref(),
            decision,
            status,
            provider: self.provider.as_deref(),
            reference: self.reference.as_deref(),
            path: self.path,
            replay,
            idempotency: self.idempotency.unwrap_or("none"),
            refusal: self.refusal.as_ref(),
            ingress,
            compliance: &self.plugins,
            router: self.router.as_ref(),
            attempts: &self.attempts,
            trace_id: crate::telemetry::current_trace_id(),
        }
    }
}

/// An operation as the contract names it.
pub(crate) fn operation_name(operation: crate::plugin::types::Operation) -> &'static str {
    use crate::plugin::types::Operation;
    match operation {
        Operation::Authorize => "authorize",
        Operation::Capture => "capture",
        Operation::Refund => "refund",
        Operation::Void => "void",
        Operation::Status => "status",
    }
}

/// RFC 3339 time, UTC.
fn now() -> String {
    let mut ts = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut ts));
    ts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_decision_written_whole_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::to_file(&path).unwrap();
        let mut draft = Draft {
            operation: Some("authorize".into()),
            ..Draft::default()
        };
        draft.refusal = Some(Refused {
            stage: "comply",
            code: "amount_too_large".into(),
        });
        let ingress = || Ingress {
            plugin: "dialect-stripe",
            sha256: Some("ab"),
        };
        log.write(&draft.line("payments", ingress(), 402));
        draft.refusal = None;
        draft.idempotency = Some("replay");
        log.write(&draft.line("payments", ingress(), 200));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["decision"], "refused");
        assert_eq!(lines[0]["refusal"]["stage"], "comply");
        assert_eq!(lines[0]["status"], 402);
        assert_eq!(lines[1]["decision"], "replayed");
        assert_eq!(lines[1]["replay"], true);
        assert_eq!(lines[1]["ingress"]["plugin"], "dialect-stripe");
    }
}
