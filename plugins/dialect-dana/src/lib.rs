//! dialect-dana (skeleton: to be implemented).
