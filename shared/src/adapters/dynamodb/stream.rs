//! The table's change stream, read back into the domain: which committed changes are lifecycle
//! events (`domain::lifecycle`). A history entry inserted is one; a claim write that recorded a
//! failed publish is one; everything else (devices, codes, leases, idempotency records, …) is not.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::items::{claim_from, history_context_from, history_from};
use crate::{domain::lifecycle::LifecycleEvent, ports::StoreError};

/// What a stream record says changed: `INSERT`, `MODIFY` or `REMOVE`, with the item's images
/// (the stream view is `NEW_AND_OLD_IMAGES`) and when the change was made.
pub struct StreamChange {
    pub event_name: String,
    pub new_image: Option<HashMap<String, AttributeValue>>,
    pub old_image: Option<HashMap<String, AttributeValue>>,
    pub at: OffsetDateTime,
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
