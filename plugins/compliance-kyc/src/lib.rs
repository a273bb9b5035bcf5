//! compliance-kyc (skeleton: to be implemented).
