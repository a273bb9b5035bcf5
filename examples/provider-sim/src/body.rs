//! Reading whole request bodies under a size cap (API calls; echo streams instead).

use std::error::Error;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Larger than the cap: answer 413.
    TooLarge,
    /// The connection failed mid-body: nobody is left to answer.
    Transport(Box<dyn Error + Send + Sync>),
}

/// Collect a body of at most `limit` bytes.
pub(crate) async fn read_capped(body: Incoming, limit: usize) -> Result<Bytes, ReadError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Transport(e)),
    }
}
