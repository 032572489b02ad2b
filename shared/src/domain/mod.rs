//! Domain of the claim backend: identifiers and validation, the claim state machine, devices and
//! their ownership rules, and the device history. No AWS or Lambda types live here.

pub mod attempts;
pub mod claim;
pub mod device;
pub mod endpoints;
pub mod history;
pub mod ids;
pub mod label_code;
pub mod publish;
