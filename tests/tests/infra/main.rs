//! The deployment as written: `template.yaml` (least privilege, settings, wiring), the scripts in
//! `infra/` run with the AWS CLI against moto, and the event forwarder template.

mod event_forwarder;
mod infra_scripts;
mod template;
