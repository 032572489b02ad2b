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

    // Down for a while: attempts (the request's own, or the schedule's if it held the vendor lease)
    // fail, the failure is shown, the claim keeps waiting.
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = stack
        .call("GET", &format!("/v1/claims/{claim_id}"), "alice", None)
        .await;
    assert_eq!(waiting.body["state"], "pending");

    broker.resume().unwrap();
    // The module reconnects and subscribes again (a message published before that would be lost,
    // on AWS IoT as here; the growing backoff leaves it time).
    module
        .wait_for_next(Duration::from_secs(10), |e| *e == ModuleEvent::WaitingInStaging)
        .await;
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
