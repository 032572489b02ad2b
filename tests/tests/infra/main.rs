//! The deployment and the docs as written: `template.yaml` (least privilege, settings, wiring, the
//! alarms and dashboard against the metric catalogue, logging, the presence rule's lookup), the
//! scripts in `infra/` run with the AWS CLI against moto, the event forwarder template, and the
//! documentation (links resolve, nothing cited that the repository lacks, the API routes listed).

mod docs;
mod event_forwarder;
mod infra_scripts;
mod logging;
mod monitoring;
mod presence_filter;
mod template;
