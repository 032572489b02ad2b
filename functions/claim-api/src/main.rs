//! Wiring only: configuration and clients are built once per execution environment, then every
//! request goes to `Api::handle`.

use std::{sync::Arc, time::Duration};

use aws_config::BehaviorVersion;
use claim_api::{Api, ApiConfig};
use claim_shared::{
    adapters::{dynamodb::DynamoOwnershipStore, mqtt::MqttPublisher, secrets::SecretsManagerCredentials},
    config::{claim_settings, env_or, required, ConfigError},
    outbox::{Outbox, OutboxSettings},
    service::{ClaimService, SystemClock},
};
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = ApiConfig::new(&required("OEM_ENDPOINT")?)?;
    let table = required("CLAIMS_TABLE")?;
    let settings = claim_settings()?;
    let secret_prefix = env_or("CLAIM_THING_SECRET_PREFIX", "expresslink/claim-thing/");
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoOwnershipStore::new(aws_sdk_dynamodb::Client::new(&aws), table);
    let credentials = SecretsManagerCredentials::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        secret_prefix,
        Duration::from_secs(300),
    )
    .map_err(|err| ConfigError(err.to_string()))?;
    let outbox = Outbox::new(
        Arc::new(credentials),
        Arc::new(MqttPublisher::default()),
        OutboxSettings::default(),
    );
    let api = Api::new(ClaimService::new(store, SystemClock, settings), outbox, config);
    lambda_http::run(service_fn(|request| api.handle(request))).await
}
