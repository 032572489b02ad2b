//! Shared core of the ExpressLink claim backend: the domain (no AWS types), the ports it needs, the
//! use cases built on them, the adapters that implement the ports (on AWS, and in memory), the
//! JSON views, and the wiring that builds it all from the environment.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod ports;
pub mod service;
pub mod views;
pub mod wiring;
