//! dialect-adyen (skeleton: to be implemented).
