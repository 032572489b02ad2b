//! Events forwarded from an OEM endpoint in another account or region (`infra/event-forwarder.yaml`):
//! the forwarder's topic rules put what their SQL selects, plus `forwarded_from_account` and
//! `forwarded_from_region`, on this stack's forwarded events queue, and the SQS event source mapping
//! hands them to this function in batches.
//!
//! Each message is one event, handled as a direct one once its origin is checked
//! ([`Origin::of`]): an account that may not forward, or an event naming another account than its
//! forwarder, is refused (one `iot_event` line, outcome `refused`, and the `IotEvents` metric) and
//! changes nothing. Refused and malformed messages are done with; only a message whose handling
//! failed (a storage outage) is reported in `batchItemFailures`, so SQS redelivers that one alone
//! and, after the queue's `maxReceiveCount`, moves it to the dead-letter queue.

use claim_shared::{
    domain::forwarding::{Forwarders, Origin, Refusal},
    ports::OwnershipStore,
    service::{ClaimService, Clock},
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{events, handle_from, refuse, Route};

/// An SQS event source mapping's invocation: `{"Records": [{"messageId", "body", "eventSource": "aws:sqs", ...}]}`.
#[derive(Debug, Deserialize)]
pub struct SqsBatch {
    #[serde(rename = "Records")]
    records: Vec<SqsRecord>,
}

#[derive(Debug, Deserialize)]
struct SqsRecord {
    #[serde(rename = "messageId")]
    message_id: String,
    body: String,
    #[serde(rename = "eventSource")]
    event_source: String,
}

impl SqsBatch {
    /// The payload as an SQS batch, if it is one (every record from `aws:sqs`). A topic rule's
    /// event never is: it has no `Records`.
    pub fn from_payload(payload: &[u8]) -> Option<Self> {
        let batch: SqsBatch = serde_json::from_slice(payload).ok()?;
        let from_sqs = !batch.records.is_empty() && batch.records.iter().all(|r| r.event_source == "aws:sqs");
        from_sqs.then_some(batch)
    }
}

/// Handles every message of the batch; the answer names the ones to try again.
pub async fn handle_batch<S: OwnershipStore, C: Clock>(
    claims: &ClaimService<S, C>,
    batch: &SqsBatch,
    forwarders: &Forwarders,
) -> Value {
    let mut failures = Vec::new();
    for record in &batch.records {
        if let Err(error) = handle_message(claims, record.body.as_bytes(), forwarders).await {
            tracing::warn!(event = "forwarded_event_failed", message_id = %record.message_id, error = %error);
            failures.push(json!({ "itemIdentifier": record.message_id }));
        }
    }
    json!({ "batchItemFailures": failures })
}

/// One forwarded message: `Err` only when it should be delivered again.
pub async fn handle_message<S: OwnershipStore, C: Clock>(
    claims: &ClaimService<S, C>,
    body: &[u8],
    forwarders: &Forwarders,
) -> Result<Value, String> {
    let event = match events::decode(body) {
        Ok(event) => event,
        Err(malformed) => return Ok(refuse(&malformed)),
    };
    match Origin::of(&event, forwarders) {
        Ok(origin) => handle_from(claims, &event, Route::Forwarded(&origin)).await,
        Err(refusal) => Ok(refuse_origin(&refusal)),
    }
}

fn refuse_origin(refusal: &Refusal) -> Value {
    claim_shared::metrics::iot_event("refused");
    tracing::warn!(
        event = "iot_event",
        outcome = "refused",
        reason = refusal.reason(),
        source_account = refusal.account(),
    );
    json!({ "outcome": "refused", "reason": refusal.reason() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SQS event source mapping invocation, as the Lambda developer guide shows it.
    fn batch(sources: &[&str]) -> Vec<u8> {
        let records: Vec<Value> = sources
            .iter()
            .enumerate()
            .map(|(index, source)| {
                json!({
                    "messageId": format!("059f36b4-87a3-44ab-83d2-66197512710{index}"),
                    "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
                    "body": "{\"eventType\": \"connected\"}",
                    "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                        "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
                    "messageAttributes": {},
                    "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                    "eventSource": source,
                    "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
                    "awsRegion": "us-east-2"
                })
            })
            .collect();
        serde_json::to_vec(&json!({ "Records": records })).unwrap_or_default()
    }

    #[test]
    fn an_sqs_invocation_is_a_batch_and_a_topic_rule_event_is_not() {
        let two = SqsBatch::from_payload(&batch(&["aws:sqs", "aws:sqs"]));
        assert_eq!(two.map(|b| b.records.len()), Some(2));
        for not_a_batch in [
            batch(&[]),
            batch(&["aws:sqs", "aws:dynamodb"]),
            br#"{"eventType": "connected", "clientId": "t1", "event_kind": "presence_connected"}"#.to_vec(),
            br#"{"Records": "x"}"#.to_vec(),
            b"not json".to_vec(),
        ] {
            assert!(
                SqsBatch::from_payload(&not_a_batch).is_none(),
                "{}",
                String::from_utf8_lossy(&not_a_batch)
            );
        }
    }
}
