//! Test kit for the integration tests and the local stack: clients for the local engines, tables
//! created from `template.yaml`, and a clock the tests can move.

pub mod schema;

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::Client as DynamoClient;
use claim_shared::service::Clock;
use time::OffsetDateTime;

/// Where the local DynamoDB engine listens unless `AWS_ENDPOINT_URL_DYNAMODB` says otherwise
/// (`scripts/dev.sh` writes the endpoints it started to `.local/endpoints.env`).
pub const DEFAULT_DYNAMODB_ENDPOINT: &str = "http://127.0.0.1:8000";

/// A DynamoDB client for the local engine. Local engines accept any static credentials.
pub async fn local_dynamodb() -> DynamoClient {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| DEFAULT_DYNAMODB_ENDPOINT.to_owned());
    dynamodb_at(&endpoint).await
}

pub async fn dynamodb_at(endpoint: &str) -> DynamoClient {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "local",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    DynamoClient::new(&config)
}

/// A new, empty ownership table with a unique name, so tests run in parallel without sharing state.
pub async fn fresh_table(client: &DynamoClient) -> String {
    let name = format!("claims-test-{}", uuid::Uuid::new_v4().simple());
    let schema = match schema::TableSchema::from_template_file() {
        Ok(schema) => schema,
        Err(err) => panic!("template.yaml: {err}"),
    };
    if let Err(err) = schema.create(client, &name).await {
        panic!("cannot create table {name} (is the local stack up? `scripts/dev.sh up`): {err}");
    }
    name
}

/// A clock that stands still until a test moves it.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(start: OffsetDateTime) -> Self {
        Self(Arc::new(AtomicI64::new(to_millis(start))))
    }

    pub fn advance(&self, by: time::Duration) {
        let ms = i64::try_from(by.whole_milliseconds()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let ms = self.0.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

fn to_millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
