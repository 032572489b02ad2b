//! No accepted claim is lost: with the vendor's staging endpoint down, a claim is accepted and stays
//! `pending` with the failure shown; once the endpoint is back, the scheduled publisher delivers it
//! without any new request. The test runs a Mosquitto of its own (and a vendor pointing at it), so
//! stopping it disturbs nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use claim_tests::{
    e2e::{delivered_history, Stack},
    mqtt::PrivateBroker,
};
use expresslink_sim::ModuleEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_made_while_the_staging_endpoint_is_down_is_delivered_when_it_returns() {
    let stack = Stack::connect().await;
    let mut broker = PrivateBroker::start(&stack.pki, &stack.local.staging_acl()).unwrap();
    let vendor = stack.new_vendor(broker.port).await;
    let thing = stack.new_device(&vendor).await;
    let mut module = stack.module(&thing, broker.port).await;

    broker.stop();
    let created = stack.claim("alice", &thing).await;
    assert_eq!(
        created.status, 202,
        "accepted although the endpoint is down: {:?}",
        created.body
    );
    assert_eq!(created.body["state"], "pending");
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();

    // Down for a while: attempts (the stream-fed publisher's, then the schedule's after each
    // backoff) fail, the failure is shown, the claim keeps waiting.
    let failing = stack
        .wait_for_claim("alice", &claim_id, Duration::from_secs(10), |a| {
            a.body["failure"]["code"].is_string()
        })
        .await;
    assert_eq!(
        failing.body["failure"]["code"], "staging_unreachable",
        "{:?}",
        failing.body
    );
    let waiting = stack
        .call("GET", &format!("/v1/claims/{claim_id}"), "alice", None)
        .await;
    assert_eq!(waiting.body["state"], "pending");

    // The endpoint comes back right after an attempt failed, with the next one at least 3 s away
    // (the backoff doubles from 2 s): time for the module to reconnect and subscribe again first.
    // A message published before that would be lost, on AWS IoT as here, and the claim would read
    // `endpoint_published` for a module that never got it (the user's retry is the way out); the
    // test makes sure it is not that race it exercises.
    let seen = stack.stored_claim(&claim_id).await.publish_attempts;
    let next_in = wait_for_a_new_failure(&stack, &claim_id, seen, Duration::from_secs(3)).await;
    broker.resume().unwrap();
    let resumed = tokio::time::Instant::now();
    module
        .wait_for_next(Duration::from_secs(10), |e| *e == ModuleEvent::WaitingInStaging)
        .await;
    assert!(
        resumed.elapsed() < next_in,
        "the module subscribed again {:?} after the endpoint came back, after the next attempt ({next_in:?})",
        resumed.elapsed()
    );
    // Delivered (and, once the module has moved and its arrival events came, provisioned).
    let delivered = stack
        .wait_for_claim("alice", &claim_id, Duration::from_secs(60), |a| {
            a.body["state"] == "endpoint_published" || a.body["state"] == "provisioned"
        })
        .await;
    delivered_history(&delivered.body).unwrap();
    assert_eq!(delivered.body["failure"], serde_json::Value::Null);

    module
        .wait_for(Duration::from_secs(15), |e| matches!(e, ModuleEvent::EndpointStored(_)))
        .await;
    module.settle(Duration::from_secs(3)).await;
    assert_eq!(module.messages().len(), 1, "delivered once: {:?}", module.seen);
}

/// Waits (up to 30 s) until the claim records a failed attempt after the `seen` ones whose next
/// attempt is at least `at_least` away; how far away it is then.
async fn wait_for_a_new_failure(stack: &Stack, claim_id: &str, mut seen: u32, at_least: Duration) -> Duration {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < until {
        let claim = stack.stored_claim(claim_id).await;
        if claim.publish_attempts > seen {
            seen = claim.publish_attempts;
            let next_in = claim
                .next_publish_at
                .map(|at| at - time::OffsetDateTime::now_utc())
                .and_then(|left| Duration::try_from(left).ok())
                .unwrap_or_default();
            if next_in >= at_least {
                return next_in;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no failed attempt with its next one {at_least:?} away within 30 s ({seen} attempts)");
}
