//! Wiring only: configuration and clients are built once per execution environment, then every
//! request goes to `Api::handle`.

use aws_config::BehaviorVersion;
use claim_api::{Api, ApiConfig};
use claim_shared::{
    adapters::{dynamodb::DynamoOwnershipStore, secrets::load_label_code_key},
    config::{claim_settings, env_or, required},
    outbox,
    service::{ClaimService, SystemClock},
};
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = ApiConfig::from_env()?.with_operators(&env_or("OPERATOR_PRINCIPALS", ""))?;
    let table = required("CLAIMS_TABLE")?;
    let settings = claim_settings()?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoOwnershipStore::new(aws_sdk_dynamodb::Client::new(&aws), table);
    let outbox = outbox::from_aws(&aws)?;
    // Label codes distinct from the ThingName: the HMAC key is read once; a secret that is named
    // but unreadable or too short stops the cold start (never a silent fallback to ThingNames).
    let code_key = match std::env::var("LABEL_CODE_KEY_SECRET")
        .ok()
        .filter(|name| !name.trim().is_empty())
    {
        Some(name) => Some(load_label_code_key(&aws_sdk_secretsmanager::Client::new(&aws), &name).await?),
        None => None,
    };
    let service = ClaimService::new(store, SystemClock, settings).with_label_code_key(code_key);
    let api = Api::new(service, outbox, config);
    lambda_http::run(service_fn(|request| api.handle(request))).await
}
