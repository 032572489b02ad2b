//! Handles one batch of the ownership table's change stream: every committed change that is a
//! lifecycle event (`claim_shared::domain::lifecycle`) goes to the sink (EventBridge), in stream
//! order. A record whose event the sink did not take is reported as the batch's first failure
//! (Lambda's partial batch response): Lambda retries from it, so nothing is lost and the events
//! after it may be delivered twice (consumers deduplicate on `event_id`). A record that can never
//! be read is logged and skipped: it must not block the stream. The log names the device only
//! shortened, as every log line does: not even the event id (which contains the ThingName).

use claim_shared::{
    adapters::dynamodb::stream::{lifecycle_event, StreamChange},
    domain::lifecycle::LifecycleEvent,
    metrics,
    ports::LifecycleSink,
};
use serde_json::{json, Value};

/// The lifecycle event of one raw stream record, with the record's sequence number.
fn read_record(raw: &Value) -> Result<(String, Option<LifecycleEvent>), String> {
    let (sequence, change) = StreamChange::of_record(raw)?;
    let event = lifecycle_event(&change).map_err(|err| err.to_string())?;
    Ok((sequence, event))
}

/// Handles one invocation's event; answers the partial batch response.
pub async fn handle(sink: &dyn LifecycleSink, event: &Value) -> Value {
    let started = std::time::Instant::now();
    let records = event["Records"].as_array().map(Vec::as_slice).unwrap_or_default();
    // The events in stream order, and the sequence number of the record each came from.
    let (mut sequences, mut events): (Vec<String>, Vec<LifecycleEvent>) = (Vec::new(), Vec::new());
    for raw in records {
        match read_record(raw) {
            Ok((sequence, Some(event))) => {
                sequences.push(sequence);
                events.push(event);
            }
            Ok((_, None)) => {}
            Err(error) => {
                metrics::lifecycle_event("unreadable");
                tracing::error!(
                    event = "lifecycle_record_unreadable",
                    error,
                    "a stream record was skipped"
                );
            }
        }
    }
    let results = sink.put(&events).await;
    let mut first_failure: Option<&str> = None;
    for ((sequence, event), result) in sequences.iter().zip(&events).zip(&results) {
        let outcome = if result.is_ok() { "published" } else { "failed" };
        metrics::lifecycle_event(outcome);
        let error = result.as_ref().err().map(ToString::to_string);
        tracing::info!(
            event = "lifecycle_event",
            outcome,
            r#type = event.kind.as_str(),
            claim_id = event.claim_id.as_ref().map(|id| id.as_str()),
            thing_name = %event.thing_name.redacted(),
            error,
        );
        if result.is_err() && first_failure.is_none() {
            first_failure = Some(sequence);
        }
    }
    if let Some(sequence) = first_failure {
        tracing::warn!(
            event = "lifecycle_batch_retry",
            from_sequence = sequence,
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
    }
    let failures: Vec<Value> = first_failure
        .map(|sequence| json!({ "itemIdentifier": sequence }))
        .into_iter()
        .collect();
    json!({ "batchItemFailures": failures })
}
