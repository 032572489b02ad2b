//! The handler's batch contract with a sink that refuses what the test says: the first record whose
//! event was not taken is the batch's failure (Lambda retries from it); unreadable records and
//! changes that are no event never block the batch. (The real path, stream → function → bus, is
//! tested end to end in tests/tests/end_to_end/lifecycle_events.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use async_trait::async_trait;
use claim_shared::{
    domain::lifecycle::LifecycleEvent,
    ports::{LifecycleSink, SinkError},
};
use serde_json::{json, Value};

/// Takes every event except those whose `event_id` it was told to refuse; remembers what it took.
#[derive(Default)]
struct Sink {
    refuse: Vec<String>,
    taken: Mutex<Vec<String>>,
}

#[async_trait]
impl LifecycleSink for Sink {
    async fn put(&self, events: &[LifecycleEvent]) -> Vec<Result<(), SinkError>> {
        events
            .iter()
            .map(|event| {
                if self.refuse.contains(&event.event_id) {
                    Err(SinkError("ThrottlingException".into()))
                } else {
                    self.taken.lock().unwrap().push(event.event_id.clone());
                    Ok(())
                }
            })
            .collect()
    }
}

/// A stream record inserting history entry `seq` of `thing`.
fn history_record(thing: &str, seq: u64, event: &str) -> Value {
    json!({
        "eventID": format!("e{seq}"),
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_225_600.0,
            "Keys": {"pk": {"S": format!("DEVICE#{thing}")}, "sk": {"S": format!("HISTORY#{seq:010}")}},
            "NewImage": {
                "pk": {"S": format!("DEVICE#{thing}")},
                "sk": {"S": format!("HISTORY#{seq:010}")},
                "entity": {"S": "history"},
                "vendor": {"S": "acme"},
                "seq": {"N": seq.to_string()},
                "at": {"N": "1767225600000"},
                "event": {"S": event},
                "actor_kind": {"S": "system"}
            },
            "SequenceNumber": format!("{seq}00"),
            "SizeBytes": 120,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    })
}

fn batch(records: Vec<Value>) -> Value {
    json!({ "Records": records })
}

#[tokio::test]
async fn all_taken_is_no_failure_and_imports_and_unreadable_records_are_skipped() {
    let sink = Sink::default();
    let records = vec![
        history_record("t1", 1, "imported"),
        json!({"eventName": "INSERT", "dynamodb": "not a record"}),
        history_record("t1", 2, "disabled"),
        history_record("t1", 3, "enabled"),
    ];
    let answer = lifecycle_events::handle(&sink, &batch(records)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(*sink.taken.lock().unwrap(), vec!["t1/history/2", "t1/history/3"]);
}

#[tokio::test]
async fn the_first_refused_event_is_where_lambda_retries_from() {
    let sink = Sink {
        refuse: vec!["t1/history/3".into(), "t1/history/5".into()],
        ..Sink::default()
    };
    let records = (2..=5).map(|seq| history_record("t1", seq, "disabled")).collect();
    let answer = lifecycle_events::handle(&sink, &batch(records)).await;
    assert_eq!(answer, json!({"batchItemFailures": [{"itemIdentifier": "300"}]}));
}

#[tokio::test]
async fn a_batch_that_is_not_a_stream_event_is_no_failure() {
    let sink = Sink::default();
    for event in [json!({}), json!({"Records": "x"}), json!(null)] {
        assert_eq!(
            lifecycle_events::handle(&sink, &event).await,
            json!({"batchItemFailures": []})
        );
    }
}
