//! Wiring only: configuration and clients are built once per execution environment, then every
//! request goes to `Api::handle`.

use aws_config::BehaviorVersion;
use claim_api::{Api, ApiConfig, ConfigError};
use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    service::{ClaimService, ClaimSettings, SystemClock},
};
use lambda_http::{service_fn, Error};

fn required(name: &str) -> Result<String, ConfigError> {
    std::env::var(name).map_err(|_| ConfigError(format!("environment variable {name} is not set")))
}

fn settings() -> Result<ClaimSettings, ConfigError> {
    let mut settings = ClaimSettings::default();
    if let Ok(raw) = std::env::var("CLAIM_DEADLINE_SECONDS") {
        let seconds: i64 = raw
            .parse()
            .ok()
            .filter(|s| (10..=86_400).contains(s))
            .ok_or_else(|| ConfigError(format!("CLAIM_DEADLINE_SECONDS must be 10..=86400, got {raw:?}")))?;
        settings.deadline = time::Duration::seconds(seconds);
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = ApiConfig::new(&required("OEM_ENDPOINT")?)?;
    let table = required("CLAIMS_TABLE")?;
    let settings = settings()?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoOwnershipStore::new(aws_sdk_dynamodb::Client::new(&aws), table);
    let api = Api::new(ClaimService::new(store, SystemClock, settings), config);
    lambda_http::run(service_fn(|request| api.handle(request))).await
}
