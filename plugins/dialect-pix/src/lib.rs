//! dialect-pix (skeleton: to be implemented).
