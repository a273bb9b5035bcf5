//! dialect-ideal (skeleton: to be implemented).
