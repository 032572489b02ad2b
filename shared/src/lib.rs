//! Shared core of the ExpressLink claim backend: the domain (no AWS types), the ports it needs, the
//! use cases built on them, and the adapters that implement the ports on AWS.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod outbox;
pub mod ports;
pub mod service;
