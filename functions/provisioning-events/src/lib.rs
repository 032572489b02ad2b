//! Handles the AWS IoT events that topic rules forward when a device arrives in the OEM account.
//! Events are at-least-once and unordered: every one, whatever it is, ends in one log line
//! (`iot_event` or `device_arrival`) and an `Ok` — a malformed or unknown event must never become an
//! error loop of retries. Only a storage or IoT control plane outage returns `Err`, so that Lambda's bounded asynchronous
//! retries (then the rule's error action) try again later.
//!
//! "Whatever it is" includes any byte sequence: the function takes the payload as raw bytes
//! ([`raw`]) and [`handle_raw`] classifies them. Payloads that are too large (over
//! [`events::MAX_PAYLOAD_BYTES`]), empty, not UTF-8, not JSON, nested too deep or not a JSON object
//! are `malformed` like events that cannot name a device: an `iot_event` log line whose `error` is a
//! short reason that never quotes the payload, the `IotEvents` metric (`outcome` `malformed`), the
//! answer `{"outcome":"malformed"}`, and no change to any record.

//!
//! The same function takes the events forwarded from endpoints in other accounts and regions, in
//! SQS batches ([`forwarded`]); [`handle_invocation`] tells the two apart.

pub mod events;
pub mod forwarded;
pub mod raw;

use claim_shared::{
    domain::{
        device::Provisioning,
        forwarding::{Forwarders, Origin},
    },
    ports::OwnershipStore,
    service::{ClaimService, Clock},
};
use serde_json::{json, Value};

use crate::{
    events::{IotEvent, MalformedEvent, Meaning},
    forwarded::SqsBatch,
};

/// How an event reached the function.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// From this stack's own topic rules: the function's own region and account.
    Direct {
        region: Option<&'a str>,
        account_id: Option<&'a str>,
    },
    /// Through the forwarded events queue, from the endpoint's account and region.
    Forwarded(&'a Origin),
}

/// Handles one invocation, whatever it carries: an SQS batch of forwarded events (the answer lists
/// the messages to deliver again), or one event from a topic rule (see [`handle_raw`]).
pub async fn handle_invocation<S: OwnershipStore, C: Clock>(
    claims: &ClaimService<S, C>,
    payload: &[u8],
    region: Option<&str>,
    account_id: Option<&str>,
    forwarders: &Forwarders,
) -> Result<Value, String> {
    match SqsBatch::from_payload(payload) {
        Some(batch) => Ok(forwarded::handle_batch(claims, &batch, forwarders).await),
        None => handle_raw(claims, payload, region, account_id).await,
    }
}

/// Handles one rule invocation from the payload's bytes as Lambda received them, whatever they are
/// (see the crate documentation). `region` and `account_id` as for [`handle`].
pub async fn handle_raw<S: OwnershipStore, C: Clock>(
    claims: &ClaimService<S, C>,
    payload: &[u8],
    region: Option<&str>,
    account_id: Option<&str>,
) -> Result<Value, String> {
    match events::decode(payload) {
        Ok(event) => handle(claims, &event, region, account_id).await,
        Err(malformed) => Ok(refuse(&malformed)),
    }
}

/// Handles one rule invocation. `region` and `account_id` are the function's own (the OEM account
/// the events come from), used where an event does not say.
pub async fn handle<S: OwnershipStore, C: Clock>(
    claims: &ClaimService<S, C>,
    event: &Value,
    region: Option<&str>,
    account_id: Option<&str>,
) -> Result<Value, String> {
    handle_from(claims, event, Route::Direct { region, account_id }).await
}

/// Handles one event that came by `route`.
pub(crate) async fn handle_from<S: OwnershipStore, C: Clock>(
    claims: &ClaimService<S, C>,
    event: &Value,
    route: Route<'_>,
) -> Result<Value, String> {
    let meaning = IotEvent::parse(event).and_then(|parsed| parsed.meaning());
    let arrival = match meaning {
        Err(malformed) => return Ok(refuse(&malformed)),
        Ok(Meaning::Irrelevant(why)) => {
            claim_shared::metrics::iot_event("ignored");
            tracing::info!(event = "iot_event", outcome = "ignored", reason = why);
            return Ok(json!({"outcome": "ignored", "reason": why}));
        }
        Ok(Meaning::Arrival(arrival)) => arrival,
    };
    let (region, account_id) = match route {
        Route::Direct { region, account_id } => (region, account_id),
        Route::Forwarded(origin) => (Some(origin.region.as_str()), Some(origin.account.as_str())),
    };
    let details = Provisioning {
        certificate_id: arrival.certificate_id.clone(),
        account_id: arrival.account_id.clone().or_else(|| account_id.map(str::to_owned)),
        region: region.map(str::to_owned),
    };
    // `record_arrival` logs the decision itself (`device_arrival`), the gate its own (`quarantine`).
    let outcome = claims
        .record_arrival(&arrival.thing_name, &details)
        .await
        .map_err(|err| err.to_string())?;
    let (thing, certificate_id) = (&arrival.thing_name, arrival.certificate_id.as_deref());
    let gate = match route {
        Route::Direct { .. } => claims.gate_arrival(thing, certificate_id, &outcome).await,
        Route::Forwarded(_) => claims.gate_forwarded_arrival(thing, certificate_id, &outcome).await,
    }
    .map_err(|err| err.to_string())?;
    Ok(json!({ "outcome": outcome.name(), "gate": gate.name() }))
}

/// A malformed event: one log line and one metric; the answer says so, nothing else happens.
pub(crate) fn refuse(malformed: &MalformedEvent) -> Value {
    claim_shared::metrics::iot_event("malformed");
    tracing::warn!(event = "iot_event", outcome = "malformed", error = %malformed);
    json!({"outcome": "malformed"})
}
