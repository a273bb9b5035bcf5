//! compliance-psd2-sca (skeleton: to be implemented).
