//! Driving the running local stack as its users do: an app over HTTP, a module over MQTT.

use std::{collections::HashMap, sync::Arc, time::Duration};

use claim_shared::{
    adapters::{dynamodb::DynamoOwnershipStore, iotdata::TransportRouter, secrets::SecretsManagerCredentials},
    domain::{
        claim::Claim,
        history::Actor,
        ids::{ClaimId, ThingName},
        registry::NewDevice,
    },
    ports::OwnershipStore,
    service::{ClaimService, ClaimSettings, Delivery, DeliverySettings, SystemClock},
};
use expresslink_sim::{ModuleConfig, ModuleEvent};
use tokio::sync::mpsc;

use crate::{fixture::LocalTable, local_dynamodb, local_secrets, pki::LocalPki, put_claim_thing_secret, LocalStack};

/// The vendor `scripts/dev.sh` configured (its claim-thing publishes to the stack's broker).
pub const DEMO_VENDOR: &str = "demo-vendor";

pub struct Stack {
    pub local: LocalStack,
    pub pki: LocalPki,
    pub http: reqwest::Client,
    claims: ClaimService<DynamoOwnershipStore, SystemClock>,
    store: DynamoOwnershipStore,
}

/// An HTTP answer: status and JSON body (`null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Stack {
    pub async fn connect() -> Self {
        let local = LocalStack::from_env();
        let pki = match LocalPki::ensure(&local.pki_dir) {
            Ok(pki) => pki,
            Err(err) => panic!("local PKI: {err} (is the local stack up? scripts/dev.sh up)"),
        };
        let store = DynamoOwnershipStore::new(local_dynamodb().await, &local.table);
        let claims = ClaimService::new(store.clone(), SystemClock, ClaimSettings::default());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            local,
            pki,
            http,
            claims,
            store,
        }
    }

    /// The claim as stored (what the API does not show, such as when its next publish is due).
    pub async fn stored_claim(&self, claim_id: &str) -> Claim {
        let Some(id) = ClaimId::parse(claim_id) else {
            panic!("not a claim id: {claim_id}")
        };
        match self.store.claim(&id).await {
            Ok(Some(claim)) => claim,
            other => panic!("claim {claim_id}: {other:?}"),
        }
    }

    /// A new device of `vendor` in the registry, with a unique ThingName.
    pub async fn new_device(&self, vendor: &str) -> String {
        self.new_device_with_sku(vendor, "E2E").await
    }

    pub async fn new_device_with_sku(&self, vendor: &str, sku: &str) -> String {
        let thing = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let device = NewDevice {
            thing_name: ThingName::parse(&thing).unwrap_or_else(|e| panic!("{e}")),
            vendor: vendor.to_owned(),
            sku: Some(sku.into()),
            code_hash: None,
            allow_thing_name: None,
            code_as_thing_name: None,
        };
        if let Err(err) = self.claims.import(&device, Actor::Operator("e2e".into())).await {
            panic!("import {thing}: {err}");
        }
        thing
    }

    /// A vendor of a test's own whose claim-thing publishes to `localhost:<staging_port>`.
    pub async fn new_vendor(&self, staging_port: u16) -> String {
        self.new_vendor_with_profile(staging_port).await.0
    }

    /// [`Self::new_vendor`], and its claim-thing profile (its client id is new).
    pub async fn new_vendor_with_profile(
        &self,
        staging_port: u16,
    ) -> (String, claim_shared::domain::publish::ClaimThingCredentials) {
        let vendor = format!("test-{}", uuid::Uuid::new_v4().simple());
        let secret = crate::local_claim_thing_secret(&self.pki, staging_port).unwrap_or_else(|e| panic!("{e}"));
        self.put_secret(&vendor, &secret).await;
        let profile = claim_shared::domain::publish::ClaimThingCredentials::parse(&secret.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        (vendor, profile)
    }

    pub async fn put_secret(&self, vendor: &str, secret: &serde_json::Value) {
        let prefix =
            std::env::var("CLAIM_THING_SECRET_PREFIX").unwrap_or_else(|_| "expresslink/claim-thing/".to_owned());
        if let Err(err) = put_claim_thing_secret(&local_secrets().await, &format!("{prefix}{vendor}"), secret).await {
            panic!("secret for {vendor}: {err}");
        }
    }

    /// One API call as `user` (named in the `x-local-user` header the local build accepts).
    pub async fn call(&self, method: &str, path: &str, user: &str, body: Option<Vec<u8>>) -> Answer {
        self.call_as(("x-local-user", user), method, path, body).await
    }

    /// One admin API call as `operator`, an IAM principal ARN (the `x-local-operator` header stands in
    /// for IAM locally: the local API Gateway makes it `requestContext.identity.userArn`).
    pub async fn admin(&self, method: &str, path: &str, operator: &str, body: Option<serde_json::Value>) -> Answer {
        let body = body.map(|value| value.to_string().into_bytes());
        self.call_as(("x-local-operator", operator), method, path, body).await
    }

    async fn call_as(&self, identity: (&str, &str), method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut request = self
            .http
            .request(method, format!("{}{}", self.local.api_url, path))
            .header(identity.0, identity.1)
            .header("content-type", "application/json");
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => panic!("{path}: {err} (is the local stack up? scripts/dev.sh up)"),
        };
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{path}: body is not JSON: {bytes:?}"))
        };
        Answer { status, body }
    }

    /// What 15 minutes without the device arriving do to a live claim of `thing`: its deadline (and
    /// the device's reservation) is moved into the past in the table, as if that time had passed; the
    /// scheduled sweep then records the expiry. Only for tests on the running stack, whose clock
    /// cannot be moved.
    pub async fn let_claim_expire(&self, claim_id: &str, thing: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
        let ms = i64::try_from(past.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        let client = local_dynamodb().await;
        let claim = client
            .update_item()
            .table_name(&self.local.table)
            .key("pk", AttributeValue::S(format!("CLAIM#{claim_id}")))
            .key("sk", AttributeValue::S("#CLAIM".into()))
            .update_expression("SET expires_at = :at, gsi2sk = :sk")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":at", AttributeValue::N(ms.to_string()))
            .expression_attribute_values(":sk", AttributeValue::S(format!("{ms:013}#{claim_id}")))
            .send()
            .await;
        let device = client
            .update_item()
            .table_name(&self.local.table)
            .key("pk", AttributeValue::S(format!("DEVICE#{thing}")))
            .key("sk", AttributeValue::S("#DEVICE".into()))
            .update_expression("SET holder_until = :at")
            .condition_expression("holder_claim_id = :id")
            .expression_attribute_values(":at", AttributeValue::N(ms.to_string()))
            .expression_attribute_values(":id", AttributeValue::S(claim_id.to_owned()))
            .send()
            .await;
        if let Err(err) = claim.and(device) {
            panic!("moving claim {claim_id} past its deadline: {err:?}");
        }
    }

    pub async fn claim(&self, user: &str, code: &str) -> Answer {
        let body = serde_json::json!({ "code": code }).to_string().into_bytes();
        self.call("POST", "/v1/claims", user, Some(body)).await
    }

    /// Polls the claim until `done` says so, or `within` passes; returns the last answer.
    pub async fn wait_for_claim(
        &self,
        user: &str,
        claim_id: &str,
        within: Duration,
        done: impl Fn(&Answer) -> bool,
    ) -> Answer {
        let started = std::time::Instant::now();
        loop {
            let answer = self.call("GET", &format!("/v1/claims/{claim_id}"), user, None).await;
            if done(&answer) || started.elapsed() >= within {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls the claim until it reads `state`; fails the test with the last answer if it does not
    /// within `within`.
    pub async fn claim_until(&self, user: &str, claim_id: &str, state: &str, within: Duration) -> Answer {
        let answer = self
            .wait_for_claim(user, claim_id, within, |a| a.body["state"] == state)
            .await;
        assert_eq!(
            answer.body["state"], state,
            "claim {claim_id} did not reach {state} within {within:?}: {:?}",
            answer.body
        );
        answer
    }

    /// `user` claims `thing` and its module onboards as in real life: it waits in staging, gets the
    /// endpoint message, moves to the OEM endpoint, and the claim reads `provisioned`. Returns the
    /// claim id; the module is switched off afterwards.
    pub async fn claim_and_onboard(&self, user: &str, thing: &str) -> String {
        let onboarded = ModuleEvent::ConnectedTo(self.local.oem_endpoint.clone());
        let mut module = self.module(thing, self.local.staging_port).await;
        let claimed = self.claim(user, thing).await;
        assert_eq!(claimed.status, 202, "{:?}", claimed.body);
        let claim_id = claimed.body["claim_id"].as_str().unwrap_or_default().to_owned();
        module.wait_for(Duration::from_secs(15), |e| *e == onboarded).await;
        self.claim_until(user, &claim_id, "provisioned", Duration::from_secs(20))
            .await;
        claim_id
    }

    /// Starts a simulated module for `thing` on `staging_port` and waits until it listens.
    pub async fn module(&self, thing: &str, staging_port: u16) -> Module {
        let identity = self.pki.client(thing).unwrap_or_else(|e| panic!("{e}"));
        let config = ModuleConfig {
            thing_name: thing.to_owned(),
            staging_host: "localhost".into(),
            staging_port,
            cert_pem: identity.cert_pem,
            key_pem: identity.key_pem,
            ca_pem: self.pki.ca_pem().unwrap_or_else(|e| panic!("{e}")),
            // The endpoint in another account and region is its own listener; every other OEM
            // endpoint is the stack's OEM listener.
            resolve: std::iter::once(self.local.oem_endpoint.clone())
                .chain(
                    self.local
                        .oem_endpoints
                        .iter()
                        .flat_map(|plan| plan.hosts().map(str::to_owned)),
                )
                .map(|host| {
                    let port = if host == self.local.oem_endpoint_eu {
                        self.local.oem_eu_port
                    } else {
                        self.local.oem_port
                    };
                    (host, ("localhost".to_owned(), port))
                })
                .collect::<HashMap<_, _>>(),
        };
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(expresslink_sim::run(config, events_tx));
        let mut module = Module {
            events,
            seen: Vec::new(),
            task,
        };
        module
            .wait_for(Duration::from_secs(10), |e| *e == ModuleEvent::WaitingInStaging)
            .await;
        module
    }
}

pub struct Module {
    events: mpsc::UnboundedReceiver<ModuleEvent>,
    /// Everything the module reported so far.
    pub seen: Vec<ModuleEvent>,
    task: tokio::task::JoinHandle<Result<(), expresslink_sim::ModuleError>>,
}

impl Module {
    /// Waits for an event matching `wanted` (one seen already counts); panics with what was seen
    /// if it does not come.
    pub async fn wait_for(&mut self, within: Duration, wanted: impl Fn(&ModuleEvent) -> bool) {
        if !self.seen.iter().any(&wanted) {
            self.wait_for_next(within, wanted).await;
        }
    }

    /// Like [`Module::wait_for`], but only for events that have not arrived yet.
    pub async fn wait_for_next(&mut self, within: Duration, wanted: impl Fn(&ModuleEvent) -> bool) {
        let already = self.seen.len();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    let hit = wanted(&event);
                    self.seen.push(event);
                    if hit {
                        return;
                    }
                }
                Ok(None) => panic!("the module stopped; it saw {:?}", &self.seen[already..]),
                Err(_) => panic!("timed out; since waiting the module saw {:?}", &self.seen[already..]),
            }
        }
    }

    /// Collects what arrives within `window` (to prove nothing more comes).
    pub async fn settle(&mut self, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.seen.push(event);
        }
    }

    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                ModuleEvent::Message { topic, payload } => Some((topic.clone(), payload.clone())),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a claim's `history` (from the API) reads as a delivery can legitimately read. The publisher
/// records its publish only after the broker took the message, so the device's arrival can be
/// recorded first; a publish reported for a claim its device no longer holds is then dropped
/// (`record_publish`), and `provisioned` is final. So `endpoint_published` comes before
/// `provisioned`, or not at all.
pub fn delivered_history(claim: &serde_json::Value) -> Result<(), Vec<String>> {
    let states: Vec<String> = claim["history"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .map(|change| change["state"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let states_ref: Vec<&str> = states.iter().map(String::as_str).collect();
    match states_ref.as_slice() {
        ["pending", "endpoint_published"]
        | ["pending", "endpoint_published", "provisioned"]
        | ["pending", "provisioned"] => Ok(()),
        _ => Err(states),
    }
}

/// Where the claim-thing secrets of the local stack are (`CLAIM_THING_SECRET_PREFIX`).
const OWN_SECRET_PREFIX: &str = "expresslink/claim-thing/";

/// Claims on a table of the test's own, delivered by an outbox the test drives (the stack's
/// schedule does not see them), with the stack's Secrets Manager and brokers.
pub struct OwnOutbox {
    pub claims: ClaimService<DynamoOwnershipStore, SystemClock>,
    pub table: LocalTable,
    secrets: aws_sdk_secretsmanager::Client,
}

impl OwnOutbox {
    pub async fn new() -> Self {
        let table = LocalTable::fresh().await;
        let aws = crate::moto_sdk_config().await;
        let secrets = aws_sdk_secretsmanager::Client::new(&aws);
        // A 1 ms cache: every delivery reads the secret as it is now.
        let source = SecretsManagerCredentials::new(secrets.clone(), OWN_SECRET_PREFIX, Duration::from_millis(1))
            .unwrap_or_else(|err| panic!("credential source: {err}"));
        let delivery = Delivery::new(
            Arc::new(source),
            Arc::new(TransportRouter::from_aws(&aws)),
            DeliverySettings {
                inline_budget: Duration::from_secs(5),
                ..DeliverySettings::default()
            },
        );
        let claims = ClaimService::new(table.store(), SystemClock, ClaimSettings::default()).with_delivery(delivery);
        Self { claims, table, secrets }
    }

    pub async fn put_profile(&self, vendor: &str, profile: &serde_json::Value) {
        let name = format!("{OWN_SECRET_PREFIX}{vendor}");
        if let Err(err) = put_claim_thing_secret(&self.secrets, &name, profile).await {
            panic!("secret {name}: {err}");
        }
    }
}
