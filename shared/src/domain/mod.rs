//! Domain of the claim backend: identifiers and validation, the claim state machine, devices and
//! their ownership rules, the registry's import rules, the device history, endpoint selection,
//! publishing rules, who may forward events and the failed-attempt limits. No AWS or Lambda types live here.

pub mod attempts;
pub mod claim;
pub mod device;
pub mod endpoints;
pub mod forwarding;
pub mod funnel;
pub mod history;
pub mod ids;
pub mod label_code;
pub mod lifecycle;
pub mod publish;
pub mod quarantine;
pub mod registry;
