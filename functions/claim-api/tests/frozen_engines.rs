//! The built `claim-api` binary under a Lambda Runtime API emulator (`claim_tests::runtime_api`),
//! fed API Gateway REST proxy events, against a DynamoDB Local and a moto of its own, which the test
//! freezes (`SIGSTOP`) from outside as a dependency that hangs would behave: the function answers
//! within its request budget, `503 unavailable` with `Retry-After` when it cannot do better, keeps
//! serving, and leaves nothing half-written; a hung secret store still lets a claim be accepted, owed
//! in the outbox, its failure naming the credentials. Every frozen engine is continued by a drop
//! guard, so a failing test never leaves one frozen.
//!
//! Needs Java and moto as `scripts/dev.sh` installs them (`DYNAMODB_LOCAL_DIR`, `MOTO_PYTHON`), not
//! the local stack; the two tests run one after the other, so their timings are their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use claim_shared::{
    domain::{
        device::Holder,
        ids::{ClaimId, ThingName},
    },
    ports::OwnershipStore,
};
use serde_json::Value;
use support::{
    deployment::{Answer, Deployment, Served, USER},
    Call,
};

/// `REQUEST_BUDGET_MS` of the default deployment (unset) and of the tight one.
const DEFAULT_BUDGET: Duration = Duration::from_millis(3000);
const TIGHT_BUDGET: Duration = Duration::from_millis(1000);

/// What a loaded 2-core CI machine may add to a deadline (process scheduling, the JVM, moto): an
/// answer later than the budget plus this is a hang, not slowness.
const SLACK: Duration = Duration::from_secs(3);

/// The two tests one at a time: each freezes an engine and measures how long answers take.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn assert_unavailable(answer: &Answer, budget: Duration, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {answer:?}");
    assert_eq!(answer.body["error"]["code"], "unavailable", "{what}: {answer:?}");
    assert_eq!(
        answer.retry_after.as_deref(),
        Some("1"),
        "{what}: Retry-After: {answer:?}"
    );
    assert!(
        answer.took < budget + SLACK,
        "{what}: answered after {:?}, budget {budget:?}",
        answer.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_table_answers_503_within_the_budget_and_writes_nothing() {
    let _serial = SERIAL.lock().await;
    let deployment = Deployment::start().await;
    let (thing, other) = (deployment.new_device().await, deployment.new_device().await);
    // As deployed (the default budget), and with a budget shorter than the SDK's deadline of one call.
    let mut default = deployment.function(&[]).await;
    let budget_ms = TIGHT_BUDGET.as_millis().to_string();
    let mut tight = deployment.function(&[("REQUEST_BUDGET_MS", &budget_ms)]).await;
    // Warm: clients built, connections to DynamoDB open, as in a warm execution environment.
    for served in [&mut default, &mut tight] {
        let warm = served.send(&Served::devices()).await;
        assert_eq!(warm.status, 200, "{warm:?}\n{}", served.function.output());
    }
    let before = deployment
        .table
        .store()
        .device(&ThingName::parse(&thing).unwrap())
        .await
        .unwrap();
    let history_before = deployment.table.items("history").await.len();

    let frozen = deployment.dynamodb.freeze();
    let claim = default.send(&Served::claim(&thing)).await;
    assert_unavailable(&claim, DEFAULT_BUDGET, "POST /v1/claims, table frozen");
    let list = default.send(&Served::devices()).await;
    assert_unavailable(&list, DEFAULT_BUDGET, "GET /v1/devices, table frozen");
    // The SDK's deadline of one call (2 s) ended these, before the budget: the log names DynamoDB.
    let failed: Vec<Value> = default
        .events_at_least("http_request", 3)
        .await
        .into_iter()
        .filter(|line| line["status"] == 503)
        .collect();
    assert_eq!(failed.len(), 2, "{}", default.function.output());
    for line in &failed {
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains("DynamoDB"), "the dependency is named: {line}");
    }
    // A budget shorter than the SDK's deadline cuts the request itself, and says so.
    let cut = tight.send(&Served::claim(&thing)).await;
    assert_unavailable(&cut, TIGHT_BUDGET, "POST /v1/claims, table frozen, 1 s budget");
    let cut_list = tight.send(&Served::devices()).await;
    assert_unavailable(&cut_list, TIGHT_BUDGET, "GET /v1/devices, table frozen, 1 s budget");
    let exhausted = tight.events_at_least("request_budget_exhausted", 2).await;
    assert_eq!(exhausted.len(), 2, "{}", tight.function.output());
    for line in &exhausted {
        assert_eq!(line["budget_ms"], 1000, "{line}");
        let latency = line["latency_ms"].as_u64().unwrap();
        assert!((1000..1000 + SLACK.as_millis() as u64).contains(&latency), "{line}");
    }
    // An invocation whose own deadline (the function's timeout) is nearer than the budget is
    // answered before it: the budget is cut to what it leaves, less 1 s.
    default.api.set_deadline(Duration::from_millis(2500));
    let near = default.send(&Served::devices()).await;
    assert_unavailable(
        &near,
        Duration::from_millis(1500),
        "GET /v1/devices, table frozen, 2.5 s left",
    );
    let near_cut = default.events_at_least("request_budget_exhausted", 1).await;
    assert_eq!(near_cut.len(), 1, "{}", default.function.output());
    let cut_to = near_cut[0]["budget_ms"].as_u64().unwrap();
    assert!((1000..=1500).contains(&cut_to), "{}", near_cut[0]);
    default.api.set_deadline(claim_tests::runtime_api::INVOCATION_DEADLINE);
    eprintln!(
        "table frozen: default budget POST {:?} GET {:?}; 1 s budget POST {:?} GET {:?}; 2.5 s to the \
         invocation's deadline GET {:?}",
        claim.took, list.took, cut.took, cut_list.took, near.took
    );
    assert!(default.function.is_running() && tight.function.is_running());
    frozen.thaw();

    // Nothing of the refused claims landed, not even after the engine caught up with what it had
    // been sent while frozen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = deployment
        .table
        .store()
        .device(&ThingName::parse(&thing).unwrap())
        .await
        .unwrap();
    assert_eq!(after, before, "the device is unchanged");
    assert!(matches!(after.as_ref().map(|d| &d.holder), Some(Holder::Free)));
    assert!(deployment.table.items("claim").await.is_empty(), "no claim was written");
    assert_eq!(deployment.table.items("history").await.len(), history_before);

    // The same processes serve on: a claim is accepted and published.
    let accepted = default.send(&Served::claim(&thing)).await;
    assert_eq!(accepted.status, 202, "{accepted:?}\n{}", default.function.output());
    assert_eq!(accepted.body["state"], "endpoint_published", "{accepted:?}");
    let again = tight.send(&Served::claim(&other)).await;
    assert_eq!(again.status, 202, "{again:?}\n{}", tight.function.output());
    eprintln!(
        "after thawing: claims answered in {:?} and {:?}",
        accepted.took, again.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_secret_store_still_accepts_the_claim_and_names_the_credentials() {
    let _serial = SERIAL.lock().await;
    let deployment = Deployment::start().await;
    let (thing, later) = (deployment.new_device().await, deployment.new_device().await);
    let mut served = deployment.function(&[]).await;
    let warm = served.send(&Served::devices()).await;
    assert_eq!(warm.status, 200, "{warm:?}\n{}", served.function.output());

    let frozen = deployment.moto.freeze();
    let answer = served.send(&Served::claim(&thing)).await;
    assert_eq!(answer.status, 202, "{answer:?}\n{}", served.function.output());
    assert!(
        answer.took < DEFAULT_BUDGET + SLACK,
        "accepted after {:?}, budget {DEFAULT_BUDGET:?}",
        answer.took
    );
    assert_eq!(answer.body["state"], "pending", "{answer:?}");
    assert_eq!(
        answer.body["failure"]["code"], "credentials_unavailable",
        "the hung dependency is named, not the staging endpoint: {answer:?}"
    );
    let logged = served.events_at_least("claim_publish", 1).await;
    let failed = logged
        .iter()
        .find(|line| line["error_code"] == "credentials_unavailable")
        .unwrap_or_else(|| panic!("{}", served.function.output()));
    assert!(
        failed["error"].as_str().unwrap_or_default().contains("Secrets Manager"),
        "{failed}"
    );
    // The table still answers: reads work while the secret store hangs.
    let list = served.send(&Served::devices()).await;
    assert_eq!(list.status, 200, "{list:?}");
    eprintln!(
        "secret store frozen: claim accepted in {:?}, devices listed in {:?}",
        answer.took, list.took
    );
    let claim_id = ClaimId::parse(answer.body["claim_id"].as_str().unwrap()).unwrap();
    let owed = deployment.table.store().claim(&claim_id).await.unwrap().unwrap();
    assert!(
        owed.next_publish_at.is_some(),
        "the claim is owed in the outbox: {owed:?}"
    );
    assert!(served.function.is_running());
    frozen.thaw();

    // The schedule delivers it once its backoff has passed.
    let schedule = deployment.schedule().await;
    let started = Instant::now();
    loop {
        let report = schedule.drain(Duration::from_secs(10)).await.unwrap();
        if report.published == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not delivered: {report:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let path = format!("/v1/claims/{claim_id}");
    let read = served.send(&Call::new("GET", &path, USER)).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["state"], "endpoint_published", "{read:?}");
    assert_eq!(read.body["failure"], Value::Null, "{read:?}");
    // And the function's own lookups work again.
    let next = served.send(&Served::claim(&later)).await;
    assert_eq!(next.status, 202, "{next:?}");
    assert_eq!(next.body["state"], "endpoint_published", "{next:?}");
}
