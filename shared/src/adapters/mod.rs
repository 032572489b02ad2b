//! Adapters: the only code that talks to AWS SDKs. Each maps SDK errors to the port's errors.

pub mod dynamodb;
pub mod mqtt;
pub mod secrets;
