//! JSON bodies for the answers hyper writes by itself.
//!
//! When a request cannot be parsed as HTTP/1.1 (a malformed request line or header, headers
//! beyond hyper's buffer, a URI too long), hyper answers on its own — 400, 431 or 414 with an
//! empty body — before any handler runs, and has no hook to change that answer. Every other
//! error payproxy gives is JSON, so clients (and operators reading their logs) get a reason.
//! [`JsonErrors`] wraps a connection's I/O and recognises exactly those automatic answers: a
//! status line of one of those codes followed by nothing but `content-length: 0`, `date` and
//! `connection: close`.
//! Nothing payproxy writes itself looks like that (its errors carry `content-type`, relayed
//! provider answers carry `x-payproxy-provider`), so no other response is ever touched. The
//! recognised answer is written with a JSON body in its place; hyper closes the connection
//! after it, as before.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection I/O, with hyper's automatic error answers given JSON bodies.
pub struct JsonErrors<T> {
    inner: T,
    /// A rewritten answer not yet fully written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
    /// Whether a request is being served: hyper's automatic answers come only when none is,
    /// so nothing is rewritten then (a response body is never mistaken for one).
    serving: Box<dyn Fn() -> bool + Send + Sync>,
}

impl<T> JsonErrors<T> {
    /// Wrap `inner`; `serving` says whether a request is in progress on the connection.
    pub fn new(inner: T, serving: impl Fn() -> bool + Send + Sync + 'static) -> JsonErrors<T> {
        JsonErrors {
            inner,
            pending: None,
            serving: Box::new(serving),
        }
    }

    /// The JSON answer replacing `head`, when it is one of hyper's automatic answers.
    fn rewritten(&self, head: &[u8]) -> Option<Vec<u8>> {
        if (self.serving)() {
            return None;
        }
        rewrite(head)
    }
}

/// The JSON answer replacing `head`, if `head` is one of hyper's automatic answers.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let (status, code, message) = if head.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "malformed_request",
            "the request is not valid HTTP/1.1",
        )
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            "the request headers are too large",
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        (
            "414 URI Too Long",
            "uri_too_long",
            "the request URI is too long",
        )
    } else {
        return None;
    };
    let text = std::str::from_utf8(head).ok()?;
    let (lines, rest) = text.split_once("\r\n\r\n")?;
    if !rest.is_empty() {
        return None;
    }
    let mut date = None;
    let mut empty = false;
    for line in lines.split("\r\n").skip(1) {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => empty = true,
            "date" => date = Some(value.trim()),
            "connection" if value.trim().eq_ignore_ascii_case("close") => {}
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::json!({
        "error": { "type": "invalid_request_error", "code": code, "message": message }
    })
    .to_string();
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(date) = date {
        answer.push_str(&format!("date: {date}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(answer.into_bytes())
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Write what is left of a rewritten answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        if let Some(answer) = this.rewritten(buf) {
            this.pending = Some((answer, 0));
            // The caller's bytes are taken; ours go out in their place.
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        let first = bufs.iter().find(|b| !b.is_empty());
        // hyper's automatic answer is one head and no body: a single slice.
        let only = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
        if let (Some(first), true) = (first, only) {
            if let Some(answer) = this.rewritten(first) {
                this.pending = Some((answer, 0));
                let _ = this.drain(cx)?;
                return Poll::Ready(Ok(first.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn only_hypers_own_answers_are_rewritten() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 20:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(rewrite(hyper).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(
            head.contains("date: Thu, 03 Dec 2026 20:00:00 GMT"),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "headers_too_large");
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some());

        // A relayed provider answer, an answer of ours, a body, a 200: untouched.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-payproxy-provider: a\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert_eq!(rewrite(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
