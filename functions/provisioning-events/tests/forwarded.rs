//! Forwarded events in SQS batches, against DynamoDB Local: each message is handled on its own, only
//! a message that failed (storage) is reported for redelivery, and an origin that may not forward
//! changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    domain::{
        claim::ClaimState,
        forwarding::Forwarders,
        ids::{ClaimId, ThingName},
    },
    ports::OwnershipStore,
    service::{ClaimService, ClaimSettings, Clock, SystemClock},
};
use claim_tests::{fixture::Fixture, local_dynamodb};
use provisioning_events::handle_invocation;
use serde_json::{json, Value};

const STACK_ACCOUNT: &str = "111122223333";
const FORWARDER: &str = "444455556666";

fn forwarders() -> Forwarders {
    Forwarders::parse(Some(STACK_ACCOUNT), FORWARDER).unwrap()
}

/// The presence event of `thing`, as a forwarder in `account` sends it (`None`: no origin at all).
fn connected(thing: &str, account: Option<&str>) -> String {
    let mut event = json!({
        "clientId": thing, "timestamp": 1_772_366_461_456_i64, "eventType": "connected",
        "principalIdentifier": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "client_id_from_topic": thing, "event_kind": "presence_connected",
    });
    if let Some(account) = account {
        event["forwarded_from_account"] = json!(account);
        event["forwarded_from_region"] = json!("eu-west-1");
    }
    event.to_string()
}

/// An SQS event source mapping invocation with these message bodies (ids `m0`, `m1`, …).
fn batch(bodies: &[String]) -> Vec<u8> {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(index, body)| {
            json!({"messageId": format!("m{index}"), "receiptHandle": "h", "body": body, "attributes": {},
                "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:111122223333:forwarded", "awsRegion": "us-east-1"})
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).unwrap()
}

async fn invoke<S: OwnershipStore, C: Clock>(claims: &ClaimService<S, C>, payload: &[u8]) -> Value {
    handle_invocation(claims, payload, Some("us-east-1"), Some(STACK_ACCOUNT), &forwarders())
        .await
        .unwrap()
}

async fn claimed_device(claims: &ClaimService<DynamoOwnershipStore, impl Clock>, thing: &str) -> ClaimId {
    support::import(claims, thing).await;
    let outcome = support::claim(claims, "alice", thing).await.unwrap();
    outcome.claim().claim_id.clone()
}

#[tokio::test]
async fn each_message_is_handled_on_its_own_and_refusals_are_done_with() {
    let fx = Fixture::<DynamoOwnershipStore>::new().await;
    let (arriving, untouched) = ("t-arriving", "t-untouched");
    let claim_id = claimed_device(&fx.service, arriving).await;
    let other_claim = claimed_device(&fx.service, untouched).await;
    let history_before = fx.store.history(&ThingName::parse(untouched).unwrap()).await.unwrap();

    let answer = invoke(
        &fx.service,
        &batch(&[
            connected(untouched, Some("999999999999")), // an account that may not forward
            connected(untouched, None),                 // no origin: not from a forwarder
            "{not json".to_owned(),                     // malformed
            connected(arriving, Some(FORWARDER)),       // the arrival
        ]),
    )
    .await;
    assert_eq!(answer, json!({"batchItemFailures": []}), "nothing to deliver again");

    let completed = fx.store.claim(&claim_id).await.unwrap().unwrap();
    assert_eq!(completed.state, ClaimState::Provisioned);
    let device = fx
        .store
        .device(&ThingName::parse(arriving).unwrap())
        .await
        .unwrap()
        .unwrap();
    let provisioning = device.provisioning.unwrap();
    assert_eq!(
        (provisioning.account_id.as_deref(), provisioning.region.as_deref()),
        (Some(FORWARDER), Some("eu-west-1")),
        "the endpoint's account and region, not the function's"
    );
    let waiting = fx.store.claim(&other_claim).await.unwrap().unwrap();
    assert_ne!(waiting.state, ClaimState::Provisioned, "refused events change nothing");
    assert_eq!(
        fx.store.history(&ThingName::parse(untouched).unwrap()).await.unwrap(),
        history_before
    );

    // The stack's own account forwards too (its endpoints in other regions).
    let own = claimed_device(&fx.service, "t-own-region").await;
    let answer = invoke(&fx.service, &batch(&[connected("t-own-region", Some(STACK_ACCOUNT))])).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(
        fx.store.claim(&own).await.unwrap().unwrap().state,
        ClaimState::Provisioned
    );
}

#[tokio::test]
async fn only_the_messages_that_failed_are_delivered_again() {
    // A table that does not exist: every write fails as in a storage outage.
    let broken = ClaimService::new(
        DynamoOwnershipStore::new(local_dynamodb().await, "no-such-table"),
        SystemClock,
        ClaimSettings::default(),
    );
    let answer = invoke(
        &broken,
        &batch(&[
            connected("t-one", Some(FORWARDER)),
            connected("t-two", Some("999999999999")),
            connected("t-three", Some(FORWARDER)),
        ]),
    )
    .await;
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m2"}]}),
        "the refused message is done with; the two that failed come again"
    );
}
