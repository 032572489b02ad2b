//! Test kit for the integration tests and the local stack: clients for the local engines, tables
//! created from `template.yaml`, and a clock the tests can move.

pub mod certificates;
pub mod e2e;
pub mod engines;
pub mod fixture;
pub mod forwarding;
pub mod iotdata;
pub mod lambda_bench;
pub mod lifecycle;
pub mod local_iot;
pub mod logs_insights;
pub mod mqtt;
pub mod pki;
pub mod runtime_api;
pub mod schema;
pub mod streams;

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
    DynamoClient::new(&local_sdk_config(endpoint).await)
}

/// SDK configuration for a local engine: fixed region, static test credentials, one endpoint.
/// The SDK configuration of the local stack's engines, for the engine at `endpoint`.
pub async fn local_sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
    local_sdk_config(endpoint).await
}

async fn local_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "local",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// A new, empty ownership table with a unique name, so tests run in parallel without sharing state:
/// the template's table without its change stream, which no test reads from a table of its own. In
/// DynamoDB Local every stream record makes later tables' writes dearer (docs/benchmark.md, "The
/// engines"), so a test suite whose tables all had streams would slow itself down as it went.
pub async fn fresh_table(client: &DynamoClient) -> String {
    create_fresh_table(client, false).await
}

/// [`fresh_table`] with the template's change stream, for a harness that reads it.
pub async fn fresh_table_with_stream(client: &DynamoClient) -> String {
    create_fresh_table(client, true).await
}

async fn create_fresh_table(client: &DynamoClient, with_stream: bool) -> String {
    let name = format!("claims-test-{}", uuid::Uuid::new_v4().simple());
    let mut schema = match schema::TableSchema::from_template_file() {
        Ok(schema) => schema,
        Err(err) => panic!("template.yaml: {err}"),
    };
    if !with_stream {
        schema.stream_view = None;
    }
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

/// The running local stack, as `scripts/dev.sh` describes it in `.local/endpoints.env`.
#[derive(Debug, Clone)]
pub struct LocalStack {
    pub table: String,
    pub pki_dir: std::path::PathBuf,
    pub staging_port: u16,
    pub oem_port: u16,
    /// The listener of the OEM's endpoint in another account and region (`OEM_ENDPOINT_EU`), whose
    /// events reach the stack through the forwarded events queue.
    pub oem_eu_port: u16,
    pub oem_endpoint_eu: String,
    /// provisioning-events' invocation URL (as this account's topic rules invoke it).
    pub provisioning_events_url: String,
    /// The nginx that plays the staging endpoint of the `https` transport (mutual TLS, to moto).
    pub https_staging_port: u16,
    /// moto (Secrets Manager, the IoT data plane and its request recording).
    pub moto_url: String,
    pub api_url: String,
    pub api_log: std::path::PathBuf,
    /// The OEM endpoint the functions send devices to by default (all are the OEM listener locally).
    pub oem_endpoint: String,
    /// The selection rules the functions run with (`OEM_ENDPOINTS`), if any.
    pub oem_endpoints: Option<claim_shared::domain::endpoints::EndpointPlan>,
    /// The registration portal's local build, served by the stack (its origin, no trailing slash).
    pub portal_url: String,
}

impl LocalStack {
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Self {
            table: var("CLAIMS_TABLE", "expresslink-claims"),
            pki_dir: var("PKI_DIR", &root.join(".local/pki").display().to_string()).into(),
            staging_port: var("MQTT_STAGING_PORT", "8883").parse().unwrap_or(8883),
            oem_port: var("MQTT_OEM_PORT", "8884").parse().unwrap_or(8884),
            oem_eu_port: var("MQTT_OEM_EU_PORT", "8885").parse().unwrap_or(8885),
            oem_endpoint_eu: var("OEM_ENDPOINT_EU", "local-oem-ats.iot.eu-west-1.amazonaws.com"),
            provisioning_events_url: var(
                "PROVISIONING_EVENTS_URL",
                "http://127.0.0.1:9001/2015-03-31/functions/provisioning-events/invocations",
            ),
            https_staging_port: var("HTTPS_STAGING_PORT", "8443").parse().unwrap_or(8443),
            moto_url: var("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            api_url: var("CLAIM_API_URL", "http://127.0.0.1:9000/api"),
            api_log: var(
                "CLAIM_API_LOG",
                &root.join(".local/logs/claim-functions.log").display().to_string(),
            )
            .into(),
            oem_endpoint: var("OEM_ENDPOINT", "local-oem-ats.iot.us-east-1.amazonaws.com"),
            oem_endpoints: std::env::var("OEM_ENDPOINTS")
                .ok()
                .filter(|rules| !rules.trim().is_empty())
                .map(|rules| {
                    claim_shared::domain::endpoints::EndpointPlan::from_json(&rules)
                        .unwrap_or_else(|err| panic!("OEM_ENDPOINTS: {err}"))
                }),
            portal_url: var("PORTAL_URL", "http://127.0.0.1:8080"),
        }
    }

    /// The brokers' log (`connection_messages true`), written by `scripts/dev.sh` beside the PKI.
    pub fn broker_log(&self) -> std::path::PathBuf {
        self.pki_dir.join("../logs/broker.log")
    }

    /// The staging listener's ACL, written by `scripts/dev.sh` beside the PKI.
    pub fn staging_acl(&self) -> std::path::PathBuf {
        self.pki_dir.join("../mosquitto-staging.acl")
    }
}

/// A Secrets Manager client for moto (`AWS_ENDPOINT_URL`, default `http://127.0.0.1:5000`).
pub async fn local_secrets() -> aws_sdk_secretsmanager::Client {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    aws_sdk_secretsmanager::Client::new(&local_sdk_config(&endpoint).await)
}

/// Stores (or replaces) a vendor's claim-thing secret, as `infra/` will do on AWS.
pub async fn put_claim_thing_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &serde_json::Value,
) -> Result<(), String> {
    let text = value.to_string();
    let created = client.create_secret().name(name).secret_string(&text).send().await;
    match created {
        Ok(_) => Ok(()),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => client
            .put_secret_value()
            .secret_id(name)
            .secret_string(&text)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string()),
        Err(err) => Err(aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string()),
    }
}

/// SDK configuration for moto, as the functions of the local stack get it from their environment
/// (static test credentials, so requests are signed).
pub async fn moto_sdk_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    local_sdk_config(&endpoint).await
}

/// The claim-thing secret for the local broker: the local CA's `claim-thing` identity, a UUID client
/// id, and the staging listener.
pub fn local_claim_thing_secret(pki: &pki::LocalPki, staging_port: u16) -> Result<serde_json::Value, pki::PkiError> {
    let identity = pki.client(pki::CLAIM_THING)?;
    Ok(serde_json::json!({
        "certificate_pem": identity.cert_pem,
        "private_key_pem": identity.key_pem,
        "client_id": uuid::Uuid::new_v4().to_string(),
        "staging_endpoint": "localhost",
        "port": staging_port,
        "ca_pem": pki.ca_pem()?,
    }))
}

/// A vendor profile that is always there and never used for a real connection: for tests whose
/// staging endpoint is a fake (the profile only has to exist, with its transport).
pub struct FixedCredentials {
    pub transport: claim_shared::domain::publish::PublishTransport,
}

impl FixedCredentials {
    /// A transport the API publishes inline (`https`).
    pub const INLINE: Self = Self {
        transport: claim_shared::domain::publish::PublishTransport::Https,
    };
    /// `mqtt`: the API leaves its claims owed to the stream-fed publisher.
    pub const MQTT: Self = Self {
        transport: claim_shared::domain::publish::PublishTransport::Mqtt,
    };
}

#[async_trait::async_trait]
impl claim_shared::ports::CredentialSource for FixedCredentials {
    async fn claim_thing(
        &self,
        _vendor: &str,
    ) -> Result<claim_shared::domain::publish::ClaimThingCredentials, claim_shared::domain::publish::PublishError> {
        Ok(claim_shared::domain::publish::ClaimThingCredentials {
            transport: self.transport,
            certificate_pem: String::new(),
            private_key_pem: String::new(),
            client_id: "claim-thing".into(),
            staging_endpoint: "staging.invalid".into(),
            port: 8883,
            ca_pem: None,
        })
    }
}
