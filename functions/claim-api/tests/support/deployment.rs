//! The built `claim-api` binary as deployed, on engines of the test's own: a table on a private
//! DynamoDB Local, a private moto with the vendor's profile (the `iam` transport, so the publish goes
//! to moto's IoT data plane), and the function under a Lambda Runtime API emulator
//! (`claim_tests::runtime_api`) fed API Gateway REST proxy events. The engines can be frozen from
//! outside (`frozen_engines`), or reached through proxies that count the calls (`call_counts`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use claim_shared::{
    adapters::{dynamodb::DynamoOwnershipStore, iotdata::TransportRouter, secrets::SecretsManagerCredentials},
    domain::{history::Actor, ids::ThingName, label_code::CodeHash, registry::NewDevice},
    service::{ClaimService, ClaimSettings, Delivery, DeliverySettings, SystemClock},
};
use claim_tests::{
    engines::Engine,
    fixture::LocalTable,
    local_sdk_config_at, put_claim_thing_secret,
    runtime_api::{Function, Report, RuntimeApi},
    schema::TableSchema,
};
use serde_json::{json, Value};

use super::{Call, Shape};

pub const VENDOR: &str = "frozen-vendor";
/// A vendor whose profile says `mqtt`: the API leaves its claims to the publisher, so the profile
/// is read but never used for a connection here.
pub const MQTT_VENDOR: &str = "frozen-mqtt-vendor";
pub const SECRET_PREFIX: &str = "expresslink/claim-thing/";
pub const OEM_ENDPOINT: &str = "frozen-oem-ats.iot.us-east-1.amazonaws.com";
pub const USER: &str = "5d0c4b1a-frozen-engines-user";

/// A table on a private DynamoDB Local, a private moto with the vendor's profile, and the built
/// function under the runtime emulator pointed at both.
pub struct Deployment {
    pub dynamodb: Engine,
    pub moto: Engine,
    pub table: LocalTable,
    pub service: ClaimService<DynamoOwnershipStore, SystemClock>,
}

impl Deployment {
    pub async fn start() -> Self {
        let (dynamodb, moto) = tokio::join!(Engine::dynamodb(), Engine::moto());
        let client = aws_sdk_dynamodb::Client::new(&local_sdk_config_at(&dynamodb.url).await);
        let name = format!("claims-frozen-{}", uuid::Uuid::new_v4().simple());
        TableSchema::from_template_file()
            .unwrap()
            .create(&client, &name)
            .await
            .unwrap_or_else(|err| panic!("create {name}: {err}\n{}", dynamodb.log()));
        // The `iam` transport: the publish goes to the IoT data plane at AWS_ENDPOINT_URL (moto),
        // so Secrets Manager and the staging endpoint are the one engine, and nothing else is needed.
        let secrets = aws_sdk_secretsmanager::Client::new(&local_sdk_config_at(&moto.url).await);
        put_claim_thing_secret(
            &secrets,
            &format!("{SECRET_PREFIX}{VENDOR}"),
            &json!({"transport": "iam"}),
        )
        .await
        .unwrap();
        put_claim_thing_secret(
            &secrets,
            &format!("{SECRET_PREFIX}{MQTT_VENDOR}"),
            &json!({"transport": "mqtt", "certificate_pem": "-", "private_key_pem": "-",
                    "client_id": "never-connected", "staging_endpoint": "staging.invalid"}),
        )
        .await
        .unwrap();
        let table = LocalTable { client, name };
        let service = ClaimService::new(table.store(), SystemClock, ClaimSettings::default());
        Self {
            dynamodb,
            moto,
            table,
            service,
        }
    }

    /// Imports a new device of the vendor, as an operator would; its ThingName.
    pub async fn new_device(&self) -> String {
        self.new_device_with_code(None).await
    }

    /// [`Self::new_device`] with a label code (its hash).
    pub async fn new_device_with_code(&self, code_hash: Option<CodeHash>) -> String {
        self.new_device_of(VENDOR, code_hash).await
    }

    /// A new device of `vendor`, with a label code (its hash) or none.
    pub async fn new_device_of(&self, vendor: &str, code_hash: Option<CodeHash>) -> String {
        let thing = format!("frozen-{}", uuid::Uuid::new_v4().simple());
        let device = NewDevice {
            thing_name: ThingName::parse(&thing).unwrap(),
            vendor: vendor.into(),
            sku: Some("FROZEN-1".into()),
            code_hash,
            allow_thing_name: None,
            code_as_thing_name: None,
        };
        self.service
            .import(&device, Actor::Operator("frozen-engines test".into()))
            .await
            .unwrap();
        thing
    }

    /// The built function serving a runtime API of its own, with `vars` on top of the deployment's.
    pub async fn function(&self, vars: &[(&str, &str)]) -> Served {
        self.function_via(&self.dynamodb.url, &self.moto.url, vars).await
    }

    /// [`Self::function`] reaching DynamoDB at `dynamodb` and moto at `moto` (e.g. proxies in front
    /// of the engines).
    pub async fn function_via(&self, dynamodb: &str, moto: &str, vars: &[(&str, &str)]) -> Served {
        let api = RuntimeApi::start(Vec::new()).await;
        let mut env = vec![
            ("CLAIMS_TABLE", self.table.name.as_str()),
            ("OEM_ENDPOINT", OEM_ENDPOINT),
            ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb),
            ("AWS_ENDPOINT_URL", moto),
            ("CLAIM_THING_SECRET_PREFIX", SECRET_PREFIX),
            // DynamoDB Local keeps tables per access key: the test's (`local_sdk_config_at`).
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ];
        env.extend_from_slice(vars);
        let function = Function::start(env!("CARGO_BIN_EXE_claim-api"), api.address, &env);
        Served { api, function }
    }

    /// The schedule's delivery (`claim-publisher`'s drain) on this deployment's engines.
    pub async fn schedule(&self) -> ClaimService<DynamoOwnershipStore, SystemClock> {
        let aws = local_sdk_config_at(&self.moto.url).await;
        let credentials = SecretsManagerCredentials::new(
            aws_sdk_secretsmanager::Client::new(&aws),
            SECRET_PREFIX,
            Duration::from_secs(1),
        )
        .unwrap();
        let delivery = Delivery::new(
            Arc::new(credentials),
            Arc::new(TransportRouter::from_aws(&aws)),
            DeliverySettings::default(),
        );
        ClaimService::new(self.table.store(), SystemClock, ClaimSettings::default()).with_delivery(delivery)
    }
}

/// One function process and its runtime API.
pub struct Served {
    pub api: RuntimeApi,
    pub function: Function,
}

/// An API Gateway proxy response as the function returned it, and how long it took from outside.
#[derive(Debug)]
pub struct Answer {
    pub status: u64,
    pub retry_after: Option<String>,
    pub body: Value,
    pub took: Duration,
}

impl Served {
    /// Sends one REST API event and waits for the function's answer (at most 60 s: a hang fails the
    /// test, it does not stall it).
    pub async fn send(&mut self, call: &Call<'_>) -> Answer {
        let started = Instant::now();
        let request_id = self.api.invoke(call.event(Shape::Rest).into_bytes());
        let report = self.api.answer_to(&request_id, Duration::from_secs(60)).await;
        let took = started.elapsed();
        if std::env::var_os("FROZEN_DEBUG").is_some() {
            eprintln!("{report:?}");
        }
        let Report::Response { body: response, .. } = report else {
            panic!("the invocation failed: {report:?}\n{}", self.function.output());
        };
        // API Gateway merges `headers` and `multiValueHeaders`; lambda_http fills the latter.
        let header = |name: &str| {
            let find = |map: &str| {
                response[map]
                    .as_object()
                    .and_then(|headers| headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)))
                    .map(|(_, value)| value.clone())
            };
            match find("headers") {
                Some(Value::String(value)) => Some(value),
                _ => find("multiValueHeaders")
                    .and_then(|values| values.get(0).and_then(Value::as_str).map(str::to_owned)),
            }
        };
        let body = response["body"]
            .as_str()
            .filter(|text| !text.is_empty())
            .map_or(Value::Null, |text| serde_json::from_str(text).unwrap());
        Answer {
            status: response["statusCode"].as_u64().unwrap_or_default(),
            retry_after: header("retry-after"),
            body,
            took,
        }
    }

    pub fn claim(thing: &str) -> Call<'static> {
        Call::claim(USER, thing)
    }

    pub fn devices() -> Call<'static> {
        Call::new("GET", "/v1/devices", USER)
    }

    /// The function's log events named `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.function
            .json_lines()
            .into_iter()
            .filter(|line| line["event"] == event)
            .collect()
    }

    /// [`Self::events`] once there are at least `count` (or after 5 s, what there is): the
    /// function's log reaches the test through a pipe and a reader thread, which a loaded machine
    /// may run only after the answer has arrived.
    pub async fn events_at_least(&self, event: &str, count: usize) -> Vec<Value> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = self.events(event);
            if found.len() >= count || std::time::Instant::now() >= until {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
