//! dialect-grabpay (skeleton: to be implemented).
