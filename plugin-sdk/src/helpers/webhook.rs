//! The pieces every `decode-webhook` shares: its refusals and its plain acknowledgement.
//! Verifying the provider's signature and reading its body stay each dialect's own.

use crate::payment::{HttpResponse, Refusal, RefusalKind};

/// A notification that is not the provider's: 401 with `code` (`invalid_signature` for a
/// signature that does not verify, or the dialect's own code for a missing secret, a stale
/// timestamp …). `message` must not repeat the body.
pub fn unauthorized(code: &str, message: &str) -> Refusal {
    Refusal {
        kind: RefusalKind::InvalidRequest(None),
        status: 401,
        code: code.into(),
        message: message.into(),
    }
}

/// A notification whose signature does not verify: 401 `invalid_signature`.
pub fn forged(message: &str) -> Refusal {
    unauthorized("invalid_signature", message)
}

/// A verified body that is not a notification of this provider (`what`, e.g. "a Pix
/// callback"): 400 `invalid_notification`, never echoing the body.
pub fn unreadable(what: &str) -> Refusal {
    Refusal::invalid(
        None,
        "invalid_notification",
        format!("the body is not {what}"),
    )
}

/// The acknowledgement of a provider that expects only a 2xx: 200 with no body.
pub fn acknowledged() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_without_the_body() {
        let forged = forged("the signature does not verify");
        assert_eq!(
            (forged.status, forged.code.as_str()),
            (401, "invalid_signature")
        );
        let unreadable = unreadable("a Pix callback");
        assert_eq!(unreadable.status, 400);
        assert_eq!(unreadable.message, "the body is not a Pix callback");
        assert_eq!(acknowledged().status, 200);
        assert!(acknowledged().body.is_empty());
    }
}
