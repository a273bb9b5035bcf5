//! dialect-stripe (skeleton: to be implemented).
