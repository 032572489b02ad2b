//! What the handler tests share: API Gateway events built from captured REST API (Cognito user pool
//! authorizer) and HTTP API (JWT authorizer) fixtures, the handler on DynamoDB Local with a manual
//! clock, and a publisher that records instead of sending.

#![allow(dead_code)]

pub mod deployment;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use base64::Engine as _;
use claim_api::{Api, ApiConfig};
use claim_shared::{
    domain::{
        history::Actor,
        ids::{ConfigTopic, ThingName},
        label_code::LabelCodeKey,
        publish::{ClaimThingCredentials, PublishError},
        registry::NewDevice,
    },
    ports::{EndpointPublisher, OwnershipStore},
    service::{ClaimSettings, Delivery, DeliverySettings},
};
use claim_tests::{
    fixture::{DynamoOwnershipStore, Fixture as StoreFixture},
    ManualClock,
};
use lambda_http::{http::StatusCode, Body, Response};
use serde_json::{json, Value};

pub const ENDPOINT: &str = "oem123-ats.iot.eu-west-1.amazonaws.com";
pub const ALICE: &str = "7f4c2a9e-1b3d-4e5f-8a6b-0c1d2e3f4a5b";

#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Rest,
    Http,
}

/// One request to send: method, path, caller, body and extra headers.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub user: Option<&'a str>,
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(&'a str, &'a str)>,
    /// Headers of the captured fixture to leave out.
    pub without: Vec<&'a str>,
    pub query: Option<(&'a str, &'a str)>,
    /// The IAM principal that signed the call (REST shape: `requestContext.identity.userArn`).
    pub operator: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, path: &'a str, user: &'a str) -> Self {
        Self {
            method,
            path,
            user: Some(user),
            body: None,
            headers: Vec::new(),
            without: Vec::new(),
            query: None,
            operator: None,
        }
    }

    /// An admin call signed by the IAM principal `arn` (no app user).
    pub fn admin(method: &'a str, path: &'a str, arn: &'a str) -> Self {
        Self {
            user: None,
            operator: Some(arn),
            ..Self::new(method, path, "")
        }
    }

    pub fn claim(user: &'a str, code: &str) -> Self {
        Self::new("POST", "/v1/claims", user).body(json!({ "code": code }).to_string().into_bytes())
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn without_header(mut self, name: &'a str) -> Self {
        self.without.push(name);
        self
    }

    pub fn event(&self, shape: Shape) -> String {
        let fixture = match shape {
            Shape::Rest => include_str!("../fixtures/apigw_rest_cognito.json"),
            Shape::Http => include_str!("../fixtures/apigw_http_jwt.json"),
        };
        let mut event: Value = serde_json::from_str(fixture).unwrap();
        let (body, encoded) = match &self.body {
            None => (Value::Null, false),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => (Value::String(text.to_owned()), false),
                Err(_) => (
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
                    true,
                ),
            },
        };
        for name in &self.without {
            for map in ["headers", "multiValueHeaders"] {
                if let Some(headers) = event[map].as_object_mut() {
                    headers.retain(|key, _| !key.eq_ignore_ascii_case(name));
                }
            }
        }
        event["body"] = body;
        event["isBase64Encoded"] = Value::Bool(encoded);
        let request_id = uuid::Uuid::new_v4().to_string();
        match shape {
            Shape::Rest => {
                event["httpMethod"] = json!(self.method);
                event["path"] = json!(self.path);
                event["resource"] = json!(self.path);
                event["requestContext"]["httpMethod"] = json!(self.method);
                event["requestContext"]["path"] = json!(format!("/prod{}", self.path));
                event["requestContext"]["requestId"] = json!(request_id);
                match self.user {
                    Some(user) => event["requestContext"]["authorizer"]["claims"]["sub"] = json!(user),
                    None => event["requestContext"]["authorizer"] = Value::Null,
                }
                if let Some(arn) = self.operator {
                    event["requestContext"]["identity"]["userArn"] = json!(arn);
                }
                for (name, value) in &self.headers {
                    event["headers"][*name] = json!(value);
                    event["multiValueHeaders"][*name] = json!([value]);
                }
                if let Some((k, v)) = self.query {
                    event["queryStringParameters"] = json!({ k: v });
                    event["multiValueQueryStringParameters"] = json!({ k: [v] });
                }
            }
            Shape::Http => {
                event["rawPath"] = json!(self.path);
                event["requestContext"]["http"]["method"] = json!(self.method);
                event["requestContext"]["http"]["path"] = json!(self.path);
                event["requestContext"]["requestId"] = json!(request_id);
                match self.user {
                    Some(user) => event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(user),
                    None => event["requestContext"]["authorizer"] = Value::Null,
                }
                for (name, value) in &self.headers {
                    event["headers"][*name] = json!(value);
                }
                if let Some((k, v)) = self.query {
                    let encoded: String = url_encode(v);
                    event["rawQueryString"] = json!(format!("{k}={encoded}"));
                    event["queryStringParameters"] = json!({ k: v });
                }
            }
        }
        event.to_string()
    }
}

pub fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub use claim_tests::FixedCredentials;

/// Records what would have been published.
#[derive(Default)]
pub struct RecordingPublisher(pub Mutex<Vec<(String, String)>>);

#[async_trait]
impl EndpointPublisher for RecordingPublisher {
    async fn publish(
        &self,
        _credentials: &ClaimThingCredentials,
        topic: &ConfigTopic,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let payload = String::from_utf8_lossy(payload).into_owned();
        self.0.lock().unwrap().push((topic.to_string(), payload));
        Ok(())
    }
}

pub struct Fixture {
    pub api: Arc<Api<DynamoOwnershipStore, ManualClock>>,
    pub clock: ManualClock,
    pub published: Arc<RecordingPublisher>,
    pub store: DynamoOwnershipStore,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: lambda_http::http::HeaderMap,
    pub body: Value,
}

/// The handler as deployed, except for the request budget: these tests send up to a hundred
/// requests at once into one process (on AWS, as many Lambda instances), so a request's wall time
/// here includes waiting for the others. The budget itself is tested in `deadlines.rs` and
/// `frozen_engines.rs`.
pub async fn fixture() -> Fixture {
    fixture_with(unhurried(ApiConfig::new(ENDPOINT).unwrap())).await
}

/// `config` with a request budget no test of many concurrent requests runs into (see [`fixture`]).
pub fn unhurried(mut config: ApiConfig) -> ApiConfig {
    config.request_budget = std::time::Duration::from_secs(60);
    config
}

pub async fn fixture_with(config: ApiConfig) -> Fixture {
    fixture_on(config, None).await
}

/// The handler on a fresh table and a manual clock, publishing into a recorder; with `key`, label
/// codes are enabled (as `claim-api` runs with `LABEL_CODE_KEY_SECRET`).
pub async fn fixture_on(config: ApiConfig, key: Option<LabelCodeKey>) -> Fixture {
    let stores = StoreFixture::<DynamoOwnershipStore>::new().await;
    let published = Arc::new(RecordingPublisher::default());
    let delivery = Delivery::new(
        Arc::new(FixedCredentials::INLINE),
        published.clone(),
        DeliverySettings::default(),
    );
    let service = stores
        .service_with(ClaimSettings::default())
        .with_label_code_key(key)
        .with_delivery(delivery);
    Fixture {
        api: Arc::new(Api::new(service, config)),
        clock: stores.clock.clone(),
        published,
        store: stores.store,
    }
}

impl Fixture {
    pub async fn import(&self, thing: &str) {
        self.api
            .service
            .import(
                &NewDevice {
                    thing_name: ThingName::parse(thing).unwrap(),
                    vendor: "espressif".into(),
                    sku: Some("KETTLE-2".into()),
                    code_hash: None,
                    allow_thing_name: None,
                    code_as_thing_name: None,
                },
                Actor::Operator("test".into()),
            )
            .await
            .unwrap();
    }

    pub async fn send(&self, call: &Call<'_>, shape: Shape) -> Answer {
        let request = lambda_http::request::from_str(&call.event(shape)).expect("fixture parses");
        let response: Response<Body> = self.api.handle(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.body() {
            Body::Empty => Value::Null,
            Body::Text(text) => serde_json::from_str(text).expect("JSON body"),
            Body::Binary(bytes) => serde_json::from_slice(bytes).expect("JSON body"),
            _ => panic!("unexpected body kind"),
        };
        Answer { status, headers, body }
    }

    pub async fn history_len(&self, thing: &str) -> usize {
        self.store
            .history(&ThingName::parse(thing).unwrap())
            .await
            .unwrap()
            .len()
    }
}

pub fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{:?}", answer.body);
    assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let request_id = answer.headers.get("x-request-id").and_then(|v| v.to_str().ok());
    assert_eq!(answer.body["error"]["request_id"].as_str(), request_id);
}

pub async fn fixture_with_label_codes() -> (Fixture, LabelCodeKey) {
    let key = LabelCodeKey::new(b"handler-test-label-code-key-0123456789").unwrap();
    let fx = fixture_on(unhurried(ApiConfig::new(ENDPOINT).unwrap()), Some(key.clone())).await;
    (fx, key)
}
