//! End to end on the running local stack (`scripts/dev.sh` starts it): the served functions over
//! HTTP as apps and operators call them, simulated modules over MQTT with mutual TLS, the staging
//! and OEM brokers, Secrets Manager and the IoT data plane in moto, and the IoT events bridge.
//! Every test works with devices, users and vendors of its own, so they run in parallel.

mod admin_api;
mod broker_outage;
mod claim;
mod endpoint_selection;
mod forwarded_events;
mod hostile_corpus;
mod label_codes;
mod lifecycle_events;
mod mqtt_publisher;
mod observability;
mod rogue_devices;
mod transports;
