//! Adapters: the only code that talks to AWS SDKs. Each maps SDK errors to the port's errors.
//! Publishing: `mqtt` (rumqttc), `iotdata` (the `https` and `iam` transports, and the per-vendor router).

pub mod dynamodb;
pub mod iotdata;
pub mod mqtt;
pub mod secrets;
