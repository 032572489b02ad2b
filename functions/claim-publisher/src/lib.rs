//! `claim-publisher`: one handler for its two triggers, told apart by the event.
//!
//! - **The table's stream** (`{"Records": [...]}`): the claims the records left owing their
//!   endpoint message are delivered at once ([`ClaimService::deliver_streamed`]): for `mqtt`
//!   vendors, whose messages the API leaves to this function, over the connection this execution
//!   environment keeps open. The function runs one instance at a time (reserved concurrency 1 in
//!   `template.yaml`), so a vendor's client id never has two connections.
//! - **The schedule** (anything else): records the expiry of claims past their deadline, then
//!   publishes every endpoint message still owed (a failed publish whose backoff passed, a claim
//!   an instance left owed).
//!
//! A stream batch never fails the invocation: a claim not delivered stays owed in the outbox and
//! the schedule delivers it, so retrying the batch (and holding up the stream) would add nothing.
//! (The event source mapping retries only batches throttled while the one instance was busy; in a
//! burst that is most of them, as a delivery keeps sending what the outbox gains while it runs.)

use std::{collections::HashMap, time::Duration};

use claim_shared::{
    adapters::dynamodb::stream::{owed_claim, StreamChange},
    domain::claim::Claim,
    ports::OwnershipStore,
    service::{ClaimService, Clock, DrainReport},
};
use lambda_runtime::Error;
use serde_json::{json, Value};

/// Leaves headroom below the function's 60 s timeout (template.yaml); each publish is also cut
/// off at the budget.
pub const DRAIN_BUDGET: Duration = Duration::from_secs(45);

/// Overdue claims recorded per scheduled run; more wait for the next run (reads are right
/// meanwhile).
pub const SWEEP_BATCH: u32 = 500;

/// What an invocation did (the function's answer, for logs and tests).
pub async fn handle<S: OwnershipStore, C: Clock>(claims: &ClaimService<S, C>, event: &Value) -> Result<Value, Error> {
    match event.get("Records").and_then(Value::as_array) {
        Some(records) => Ok(streamed(claims, records).await),
        None => scheduled(claims).await,
    }
}

/// The claims a stream batch left owing, latest write of each claim, in stream order.
pub fn owed_claims(records: &[Value]) -> Vec<Claim> {
    let mut owed: Vec<Claim> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for raw in records {
        let claim =
            StreamChange::of_record(raw).and_then(|(_, change)| owed_claim(&change).map_err(|err| err.to_string()));
        match claim {
            Ok(Some(claim)) => match at.get(claim.claim_id.as_str()) {
                Some(&i) => owed[i] = claim,
                None => {
                    at.insert(claim.claim_id.as_str().to_owned(), owed.len());
                    owed.push(claim);
                }
            },
            Ok(None) => {}
            Err(error) => tracing::error!(
                event = "publisher_record_unreadable",
                error,
                "a stream record was skipped"
            ),
        }
    }
    owed
}

async fn streamed<S: OwnershipStore, C: Clock>(claims: &ClaimService<S, C>, records: &[Value]) -> Value {
    let owed = owed_claims(records);
    match claims.deliver_streamed(&owed, DRAIN_BUDGET).await {
        Ok(report) => answer(&report, ("owed", json!(owed.len()))),
        Err(err) => {
            tracing::warn!(event = "outbox_stream_failed", owed = owed.len(), error = %err);
            json!({ "owed": owed.len(), "error": err.to_string() })
        }
    }
}

async fn scheduled<S: OwnershipStore, C: Clock>(claims: &ClaimService<S, C>) -> Result<Value, Error> {
    // The two jobs are independent: a failing sweep must not stop deliveries. A storage error
    // fails the invocation (after both ran); the next scheduled run starts over.
    let expired = claims.sweep_overdue(SWEEP_BATCH).await;
    let report = claims.drain(DRAIN_BUDGET).await?;
    Ok(answer(&report, ("expired", json!(expired?))))
}

/// The invocation's answer: what the delivery did, and `first` (what else the invocation did).
fn answer(report: &DrainReport, first: (&str, Value)) -> Value {
    json!({
        first.0: first.1,
        "published": report.published,
        "failed": report.failed,
        "busy_vendors": report.busy_vendors,
        "out_of_time": report.out_of_time,
        "store_retries": report.store_retries,
        "followed": report.followed,
    })
}
