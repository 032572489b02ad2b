//! Wiring only: configuration and clients are built once per execution environment, then every
//! request goes to `Api::handle`.

use aws_config::BehaviorVersion;
use claim_api::{Api, ApiConfig};
use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    config::{claim_settings, required},
    outbox,
    service::{ClaimService, SystemClock},
};
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = ApiConfig::from_env()?;
    let table = required("CLAIMS_TABLE")?;
    let settings = claim_settings()?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoOwnershipStore::new(aws_sdk_dynamodb::Client::new(&aws), table);
    let outbox = outbox::from_aws(&aws)?;
    let api = Api::new(ClaimService::new(store, SystemClock, settings), outbox, config);
    lambda_http::run(service_fn(|request| api.handle(request))).await
}
