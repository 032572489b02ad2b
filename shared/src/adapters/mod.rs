//! Adapters: the implementations of the ports. The AWS ones are the only code that talks to AWS
//! SDKs, and each maps SDK errors to the port's errors: `dynamodb` (the ownership store),
//! `secrets` (vendor profiles and the label-code key), `mqtt` (rumqttc) and `iotdata` (the `https`
//! and `iam` transports, and the per-vendor router), `iotcontrol` (certificates, for the
//! rogue-device gate), `eventbridge` (lifecycle events). `memory` is the ownership store in memory,
//! for fast tests.

pub mod dynamodb;
pub mod eventbridge;
pub mod iotcontrol;
pub mod iotdata;
pub mod memory;
pub mod mqtt;
pub mod secrets;
