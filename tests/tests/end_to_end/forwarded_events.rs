//! Arrivals at the OEM's endpoint in another account and region (the local stack's second
//! endpoint: its own listener, account 210987654321, eu-west-1). Its events reach provisioning-events
//! only as `infra/event-forwarder.yaml` sends them: with their origin, through the stack's forwarded
//! events queue (moto SQS) and the event source mapping (`local-sqs-trigger`, partial batch
//! responses). A forwarded arrival completes its claim; the same arrival through both paths (this
//! account's rules and the queue) completes it once; an event from an account that may not forward
//! is refused, logged and counted, and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use claim_tests::{
    e2e::{Stack, DEMO_VENDOR},
    forwarding::{forwarded, ForwardedQueue, FORWARDING_ACCOUNT, FORWARDING_REGION, VISIBILITY_TIMEOUT_SECONDS},
    local_iot::certificate_id_of,
};
use expresslink_sim::ModuleEvent;
use serde_json::{json, Value};

const OPERATOR: &str = "arn:aws:iam::123456789012:user/forwarding-test";

fn user() -> String {
    format!("fwd-{}", uuid::Uuid::new_v4().simple())
}

/// The functions' JSON lines written so far.
fn log_lines(stack: &Stack) -> Vec<Value> {
    std::fs::read_to_string(&stack.local.api_log)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits until the log has `count` lines that `wanted` picks; returns them.
async fn wait_for_lines(stack: &Stack, count: usize, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let lines: Vec<Value> = log_lines(stack).into_iter().filter(|line| wanted(line)).collect();
        if lines.len() >= count || started.elapsed() > Duration::from_secs(20) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn device(stack: &Stack, thing: &str) -> Value {
    let answer = stack
        .admin("GET", &format!("/v1/admin/devices/{thing}"), OPERATOR, None)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}

fn provisioned_entries(device: &Value) -> usize {
    device["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["event"] == "provisioned")
        .count()
}

/// The presence event AWS IoT raises when `thing` connects with its certificate, as the stack's
/// rule delivers it.
fn connected(thing: &str, certificate_id: &str) -> Value {
    json!({
        "clientId": thing, "timestamp": 1_767_225_600_000_i64, "eventType": "connected",
        "sessionIdentifier": uuid::Uuid::new_v4().to_string(), "principalIdentifier": certificate_id,
        "ipAddress": "127.0.0.1", "versionNumber": 0,
        "client_id_from_topic": thing, "event_kind": "presence_connected",
    })
}

/// A claim whose device has no module: it waits for an arrival the test delivers itself.
struct Waiting {
    thing: String,
    certificate_id: String,
    user: String,
    claim_id: String,
}

async fn claim_without_module() -> (Stack, ForwardedQueue, Waiting) {
    let stack = Stack::connect().await;
    let queue = ForwardedQueue::ensure().await.unwrap();
    let thing = stack.new_device(DEMO_VENDOR).await;
    let certificate_id = certificate_id_of(&stack.pki.client(&thing).unwrap().cert_pem).unwrap();
    let user = user();
    let claimed = stack.claim(&user, &thing).await;
    assert_eq!(claimed.status, 202, "{:?}", claimed.body);
    let claim_id = claimed.body["claim_id"].as_str().unwrap().to_owned();
    // Published by claim-publisher from the table's stream, before the test looks at the device.
    stack
        .claim_until(&user, &claim_id, "endpoint_published", Duration::from_secs(15))
        .await;
    let waiting = Waiting {
        thing,
        certificate_id,
        user,
        claim_id,
    };
    (stack, queue, waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_arrival_completes_the_claim_with_the_endpoints_account_and_region() {
    let stack = Stack::connect().await;
    let thing = stack.new_device_with_sku(DEMO_VENDOR, "EU-PRO").await;
    let mut module = stack.module(&thing, stack.local.staging_port).await;
    let user = user();
    let claimed = stack.claim(&user, &thing).await;
    assert_eq!(claimed.status, 202, "{:?}", claimed.body);
    assert_eq!(claimed.body["target_endpoint"], stack.local.oem_endpoint_eu.as_str());
    let claim_id = claimed.body["claim_id"].as_str().unwrap().to_owned();
    let arrived = ModuleEvent::ConnectedTo(stack.local.oem_endpoint_eu.clone());
    module.wait_for(Duration::from_secs(15), |e| *e == arrived).await;
    stack
        .claim_until(&user, &claim_id, "provisioned", Duration::from_secs(20))
        .await;

    let device = device(&stack, &thing).await;
    assert_eq!(device["provisioning"]["account_id"], FORWARDING_ACCOUNT, "{device}");
    assert_eq!(device["provisioning"]["region"], FORWARDING_REGION, "{device}");
    assert_eq!(provisioned_entries(&device), 1, "{device}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_arrival_through_both_paths_completes_the_claim_once() {
    // The arrival comes as two copies of one event at once.
    let (stack, queue, waiting) = claim_without_module().await;
    let Waiting {
        thing,
        certificate_id,
        user,
        claim_id,
    } = &waiting;
    let event = connected(thing, certificate_id);
    let copy = forwarded(event.clone(), FORWARDING_ACCOUNT, FORWARDING_REGION);
    let http = reqwest::Client::new();
    let (direct, queued) = tokio::join!(
        http.post(&stack.local.provisioning_events_url).json(&event).send(),
        queue.send(&copy),
    );
    assert!(direct.unwrap().status().is_success());
    queued.unwrap();

    stack
        .claim_until(user, claim_id, "provisioned", Duration::from_secs(20))
        .await;
    // Both copies handled: one completed the claim; the other found the device owned (and may only
    // fill in a provisioning detail the first lacked: `details_added`).
    let arrivals = wait_for_lines(&stack, 2, |line| {
        line["event"] == "device_arrival" && line["certificate_id"] == certificate_id.as_str()
    })
    .await;
    let outcomes: Vec<&str> = arrivals.iter().map(|line| line["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), 2, "{arrivals:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == "completed").count(),
        1,
        "{arrivals:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| ["completed", "already_owned", "details_added"].contains(o)),
        "{arrivals:?}"
    );
    let device = device(&stack, thing).await;
    assert_eq!(provisioned_entries(&device), 1, "{device}");
    let claim = stack.call("GET", &format!("/v1/claims/{claim_id}"), user, None).await;
    claim_tests::e2e::delivered_history(&claim.body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_from_an_account_that_may_not_forward_is_refused_logged_counted_and_changes_nothing() {
    let (stack, queue, waiting) = claim_without_module().await;
    let Waiting {
        thing,
        certificate_id,
        user,
        claim_id,
    } = &waiting;
    let before = device(&stack, thing).await;

    // An account of its own (12 digits, not the allowed one), so this test finds its own lines.
    let stranger = format!("9{:011}", rand_digits());
    let refused = |line: &Value| line["event"] == "iot_event" && line["source_account"] == stranger.as_str();
    queue
        .send(&forwarded(
            connected(thing, certificate_id),
            &stranger,
            FORWARDING_REGION,
        ))
        .await
        .unwrap();
    let lines = wait_for_lines(&stack, 1, refused).await;
    assert_eq!(lines.len(), 1, "the refusal is logged");
    assert_eq!(lines[0]["outcome"], "refused");
    assert_eq!(lines[0]["reason"], "account_not_allowed");
    assert_eq!(lines[0]["level"], "WARN");
    assert!(
        log_lines(&stack)
            .iter()
            .any(|line| line["outcome"] == "refused" && line["IotEvents"].as_f64() >= Some(1.0)),
        "counted in IotEvents by outcome"
    );

    // Done with, not delivered again: still one line after the visibility timeout.
    tokio::time::sleep(Duration::from_secs(u64::from(VISIBILITY_TIMEOUT_SECONDS) + 2)).await;
    assert_eq!(log_lines(&stack).iter().filter(|line| refused(line)).count(), 1);
    let claim = stack.call("GET", &format!("/v1/claims/{claim_id}"), user, None).await;
    assert_ne!(claim.body["state"], "provisioned", "{:?}", claim.body);
    let after = device(&stack, thing).await;
    assert_eq!(after["history"], before["history"]);
    assert_eq!(after["provisioning"], before["provisioning"]);
}

fn rand_digits() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32) % 100_000_000_000
}
