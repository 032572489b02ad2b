//! The request budget (`REQUEST_BUDGET_MS`) and the `503` answers, through the handler: every
//! `503 unavailable` carries `Retry-After`; a table that hangs is cut at the budget; a slow staging
//! endpoint never turns an accepted claim into a `503`; an import that runs out of time answers
//! the rows it did and asks for the rest again. (The built binary against frozen engines:
//! `frozen_engines.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use claim_api::{Api, ApiConfig};
use claim_shared::{
    domain::{ids::ConfigTopic, publish::ClaimThingCredentials, publish::PublishError},
    ports::EndpointPublisher,
    service::{ClaimSettings, Delivery, DeliverySettings},
};
use claim_tests::{
    engines::SlowLink,
    fixture::{DynamoOwnershipStore, Fixture as StoreFixture},
    ManualClock,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use support::{assert_error, Call, FixedCredentials, Fixture, RecordingPublisher, Shape, ALICE, ENDPOINT};

/// What a loaded 2-core machine may add to a deadline.
const SLACK: Duration = Duration::from_secs(3);

const OPERATOR: &str = "arn:aws:iam::111122223333:user/ops";

fn config(budget: Duration) -> ApiConfig {
    let mut config = ApiConfig::new(ENDPOINT).unwrap();
    config.request_budget = budget;
    config
}

/// The handler on `store`, publishing through `staging`.
fn api_on(
    store: DynamoOwnershipStore,
    clock: ManualClock,
    budget: Duration,
    staging: Arc<dyn EndpointPublisher>,
) -> Fixture {
    let delivery = Delivery::new(Arc::new(FixedCredentials::INLINE), staging, DeliverySettings::default());
    let service = claim_shared::service::ClaimService::new(store.clone(), clock.clone(), ClaimSettings::default())
        .with_delivery(delivery);
    Fixture {
        api: Arc::new(Api::new(service, config(budget))),
        clock,
        published: Arc::new(RecordingPublisher::default()),
        store,
    }
}

fn assert_unavailable(answer: &support::Answer, what: &str) {
    assert_error(answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let retry_after = answer.headers.get("retry-after").and_then(|v| v.to_str().ok());
    assert_eq!(retry_after, Some("1"), "{what}: {:?}", answer.headers);
}

#[tokio::test]
async fn every_503_carries_retry_after() {
    // Nothing listens on port 9; without the SDK's retries (and their backoff) each call fails at once.
    let aws = claim_tests::local_sdk_config_at("http://127.0.0.1:9").await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&aws)
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    let store = DynamoOwnershipStore::new(client, "unreachable");
    let fx = api_on(
        store,
        ManualClock::at(claim_tests::fixture::T0),
        Duration::from_secs(3),
        Arc::new(RecordingPublisher::default()),
    );
    let claim_path = format!("/v1/claims/{}", uuid::Uuid::new_v4());
    let retry_path = format!("{claim_path}/retry");
    let calls = [
        Call::claim(ALICE, "some-device-1"),
        Call::new("GET", "/v1/devices", ALICE),
        Call::new("GET", "/v1/devices/some-device-1", ALICE),
        Call::new("DELETE", "/v1/devices/some-device-1", ALICE),
        Call::new("GET", &claim_path, ALICE),
        Call::new("POST", &retry_path, ALICE),
        Call::admin("GET", "/v1/admin/devices/some-device-1", OPERATOR),
        Call::admin("POST", "/v1/admin/devices/some-device-1/disable", OPERATOR),
    ];
    for call in &calls {
        let answer = fx.send(call, Shape::Rest).await;
        assert_unavailable(&answer, &format!("{} {}", call.method, call.path));
    }
}

#[tokio::test]
async fn a_table_that_hangs_is_cut_at_the_budget() {
    // Accepts connections and never answers; the store's client has no SDK deadlines of its own
    // (the test kit's configuration), so only the budget ends the request.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let store = DynamoOwnershipStore::new(claim_tests::dynamodb_at(&url).await, "hangs");
    let budget = Duration::from_millis(1000);
    let fx = api_on(
        store,
        ManualClock::at(claim_tests::fixture::T0),
        budget,
        Arc::new(RecordingPublisher::default()),
    );
    for call in [Call::claim(ALICE, "hanging-1"), Call::new("GET", "/v1/devices", ALICE)] {
        let started = Instant::now();
        let answer = fx.send(&call, Shape::Rest).await;
        let took = started.elapsed();
        assert_unavailable(&answer, call.path);
        assert!(
            took >= budget && took < budget + SLACK,
            "{} answered after {took:?}",
            call.path
        );
    }
    held.abort();
}

/// A staging endpoint that never confirms in time.
struct SlowStaging;

#[async_trait]
impl EndpointPublisher for SlowStaging {
    async fn publish(&self, _: &ClaimThingCredentials, _: &ConfigTopic, _: &[u8]) -> Result<(), PublishError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_slow_staging_endpoint_never_turns_an_accepted_claim_into_a_503() {
    let stores = StoreFixture::<DynamoOwnershipStore>::new().await;
    let budget = Duration::from_millis(1500);
    let fx = api_on(
        stores.store.clone(),
        stores.clock.clone(),
        budget,
        Arc::new(SlowStaging),
    );
    fx.import("slow-staging-api-1").await;
    let started = Instant::now();
    let answer = fx.send(&Call::claim(ALICE, "slow-staging-api-1"), Shape::Rest).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert!(took < budget, "answered after {took:?}");
    assert_eq!(answer.body["state"], "pending");
    assert_eq!(answer.body["failure"]["code"], "staging_timeout");
    assert!(answer.headers.contains_key("location"));
}

#[tokio::test]
async fn an_import_out_of_time_answers_the_rows_it_did_and_asks_for_the_rest_again() {
    let stores = StoreFixture::<DynamoOwnershipStore>::new().await;
    let table = stores.table();
    let engine = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .unwrap_or_else(|_| claim_tests::DEFAULT_DYNAMODB_ENDPOINT.to_owned());
    // Every DynamoDB call 100 ms slower: an import row takes a few of them.
    let link = SlowLink::start(&engine, Duration::from_millis(100)).await;
    let slow = DynamoOwnershipStore::new(claim_tests::dynamodb_at(&link.url).await, &table.name);
    let budget = Duration::from_millis(1000);
    let fx = api_on(
        slow,
        stores.clock.clone(),
        budget,
        Arc::new(RecordingPublisher::default()),
    );
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let devices: Vec<Value> = (0..30)
        .map(|i| json!({"thing_name": format!("import-{prefix}-{i}"), "vendor": "espressif"}))
        .collect();
    let call =
        Call::admin("PUT", "/v1/admin/devices", OPERATOR).body(json!({ "devices": devices }).to_string().into_bytes());
    let started = Instant::now();
    let answer = fx.send(&call, Shape::Rest).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(took < budget, "answered after {took:?}");
    let results = answer.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 30);
    let created = results.iter().take_while(|row| row["status"] == "created").count();
    assert!((1..30).contains(&created), "{results:?}");
    for row in &results[created..] {
        assert_eq!(row["status"], "rejected", "{row}");
        assert!(row["reason"].as_str().unwrap().contains("send it again"), "{row}");
    }
    // Sent again on a fast link, the whole import completes.
    let fast = api_on(
        table.store(),
        stores.clock.clone(),
        Duration::from_secs(8),
        Arc::new(RecordingPublisher::default()),
    );
    let again = fast.send(&call, Shape::Rest).await;
    let statuses: Vec<&str> = again.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "unchanged").count(),
        created,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "created").count(),
        30 - created,
        "{statuses:?}"
    );
}
