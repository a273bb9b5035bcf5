//! compliance-limits (skeleton: to be implemented).
