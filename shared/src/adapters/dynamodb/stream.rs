//! The table's change stream, read back into the domain: which committed changes are lifecycle
//! events (`domain::lifecycle`), and which left a claim owing its endpoint message (the
//! publisher's work). A history entry inserted is a lifecycle event; a claim write that recorded a
//! failed publish is one; everything else (devices, codes, leases, idempotency records, …) is not.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::items::{claim_from, history_context_from, history_from};
use crate::{
    domain::{claim::Claim, lifecycle::LifecycleEvent},
    ports::StoreError,
};

/// What a stream record says changed: `INSERT`, `MODIFY` or `REMOVE`, with the item's images
/// (the stream view is `NEW_AND_OLD_IMAGES`) and when the change was made.
pub struct StreamChange {
    pub event_name: String,
    pub new_image: Option<HashMap<String, AttributeValue>>,
    pub old_image: Option<HashMap<String, AttributeValue>>,
    pub at: OffsetDateTime,
}

impl StreamChange {
    /// A stream record as Lambda hands it to a function (a DynamoDB Streams event's `Records`
    /// entry): its sequence number, and the change.
    pub fn of_record(raw: &serde_json::Value) -> Result<(String, Self), String> {
        let record: aws_lambda_events::event::dynamodb::EventRecord =
            serde_json::from_value(raw.clone()).map_err(|err| format!("not a stream record: {err}"))?;
        let sequence = record
            .change
            .sequence_number
            .clone()
            .ok_or_else(|| "no sequence number".to_owned())?;
        let image = |item: serde_dynamo::Item| (!item.is_empty()).then(|| item.into());
        let millis = record.change.approximate_creation_date_time.timestamp_millis();
        let change = Self {
            event_name: record.event_name,
            new_image: image(record.change.new_image),
            old_image: image(record.change.old_image),
            at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                .unwrap_or_else(|_| OffsetDateTime::now_utc()),
        };
        Ok((sequence, change))
    }
}

/// The claim a committed change left owing its endpoint message (inserted or written with
/// `next_publish_at` set), as written. Whether it is due and live is the publisher's to decide, on
/// a fresh read.
pub fn owed_claim(change: &StreamChange) -> Result<Option<Claim>, StoreError> {
    let new = change.new_image.as_ref();
    match (change.event_name.as_str(), entity(new), new) {
        ("INSERT" | "MODIFY", Some("claim"), Some(item)) if item.contains_key("next_publish_at") => {
            claim_from(item).map(Some)
        }
        _ => Ok(None),
    }
}

fn entity(image: Option<&HashMap<String, AttributeValue>>) -> Option<&str> {
    image?.get("entity")?.as_s().ok().map(String::as_str)
}

/// The lifecycle event a committed change is, if any. An item of ours that cannot be read is an
/// error (the caller logs it and moves on: a record that can never be read must not block the
/// stream).
pub fn lifecycle_event(change: &StreamChange) -> Result<Option<LifecycleEvent>, StoreError> {
    let new = change.new_image.as_ref();
    match (
        change.event_name.as_str(),
        entity(new),
        entity(change.old_image.as_ref()),
    ) {
        ("INSERT", Some("history"), _) => {
            let Some(item) = new else { return Ok(None) };
            let (thing, context) = history_context_from(item)?;
            Ok(LifecycleEvent::of_history(&thing, &history_from(item)?, context))
        }
        ("MODIFY", Some("claim"), Some("claim")) => {
            let (Some(after), Some(before)) = (new, change.old_image.as_ref()) else {
                return Ok(None);
            };
            Ok(LifecycleEvent::of_claim_write(
                &claim_from(before)?,
                &claim_from(after)?,
                change.at,
            ))
        }
        _ => Ok(None),
    }
}
