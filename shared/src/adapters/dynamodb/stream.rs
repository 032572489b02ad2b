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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use time::Duration;

    use super::*;
    use crate::{
        adapters::dynamodb::items::claim_item,
        domain::ids::{ClaimId, ThingName, UserId},
    };

    fn claim() -> Claim {
        Claim::new(
            ClaimId::new_random(),
            ThingName::parse("stream-thing").unwrap_or_else(|err| panic!("{err}")),
            UserId::parse("alice").unwrap_or_else(|err| panic!("{err}")),
            "acme".into(),
            "oem.example".into(),
            OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap_or_else(|err| panic!("{err}")),
            Duration::minutes(15),
        )
    }

    /// A stream record as Lambda hands it over, with the store's own encoding of `image`.
    fn record(event_name: &str, image: Option<&HashMap<String, AttributeValue>>, sequence: &str) -> Value {
        let image = image.map_or(json!({}), |item| {
            serde_json::to_value(serde_dynamo::Item::from(item.clone())).unwrap_or(Value::Null)
        });
        json!({
            "eventID": "e1",
            "eventName": event_name,
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_767_225_600.0,
                "Keys": {},
                "NewImage": image,
                "SequenceNumber": sequence,
                "SizeBytes": 100,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            }
        })
    }

    #[test]
    fn a_claim_written_owing_its_message_is_read_back_from_its_stream_record() {
        let owed = claim();
        assert!(owed.next_publish_at.is_some(), "a new claim owes its message");
        let item = claim_item(&owed);
        for event in ["INSERT", "MODIFY"] {
            let (sequence, change) =
                StreamChange::of_record(&record(event, Some(&item), "42")).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(sequence, "42");
            let read = owed_claim(&change).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(read.as_ref(), Some(&owed), "{event}");
        }
    }

    #[test]
    fn a_claim_that_owes_nothing_a_removal_and_other_items_are_not_owed() {
        let mut published = claim();
        published.next_publish_at = None;
        let owed = claim_item(&claim());
        let mut device = owed.clone();
        device.insert("entity".into(), AttributeValue::S("device".into()));
        for (event, image) in [
            ("MODIFY", Some(claim_item(&published))),
            ("REMOVE", None),
            ("INSERT", Some(device)),
        ] {
            let (_, change) =
                StreamChange::of_record(&record(event, image.as_ref(), "7")).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(
                owed_claim(&change).unwrap_or_else(|err| panic!("{err}")),
                None,
                "{event}"
            );
        }
        assert!(StreamChange::of_record(&json!({"eventName": "INSERT"})).is_err());
    }
}
