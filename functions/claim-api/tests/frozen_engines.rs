//! The built `claim-api` binary under a Lambda Runtime API emulator (`claim_tests::runtime_api`),
//! fed API Gateway REST proxy events, against a DynamoDB Local and a moto of its own, which the test
//! freezes (`SIGSTOP`) from outside as a dependency that hangs would behave: the function answers
//! within its request budget, `503 unavailable` with `Retry-After` when it cannot do better, keeps
//! serving, and leaves nothing half-written; a hung secret store still lets a claim be accepted, owed
//! in the outbox, its failure naming the credentials. Every frozen engine is continued by a drop
//! guard, so a failing test never leaves one frozen.
//!
//! Needs Java and moto as `scripts/dev.sh` installs them (`DYNAMODB_LOCAL_DIR`, `MOTO_PYTHON`), not
//! the local stack; the two tests run one after the other, so their timings are their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use claim_shared::{
    adapters::{dynamodb::DynamoOwnershipStore, iotdata::TransportRouter, secrets::SecretsManagerCredentials},
    domain::{
        device::Holder,
        history::Actor,
        ids::{ClaimId, ThingName},
        registry::NewDevice,
    },
    ports::OwnershipStore,
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
use support::{Call, Shape};

const VENDOR: &str = "frozen-vendor";
const SECRET_PREFIX: &str = "expresslink/claim-thing/";
const OEM_ENDPOINT: &str = "frozen-oem-ats.iot.us-east-1.amazonaws.com";
const USER: &str = "5d0c4b1a-frozen-engines-user";

/// `REQUEST_BUDGET_MS` of the default deployment (unset) and of the tight one.
const DEFAULT_BUDGET: Duration = Duration::from_millis(3000);
const TIGHT_BUDGET: Duration = Duration::from_millis(1000);

/// What a loaded 2-core CI machine may add to a deadline (process scheduling, the JVM, moto): an
/// answer later than the budget plus this is a hang, not slowness.
const SLACK: Duration = Duration::from_secs(3);

/// The two tests one at a time: each freezes an engine and measures how long answers take.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A table on a private DynamoDB Local, a private moto with the vendor's profile, and the built
/// function under the runtime emulator pointed at both.
struct Deployment {
    dynamodb: Engine,
    moto: Engine,
    table: LocalTable,
    service: ClaimService<DynamoOwnershipStore, SystemClock>,
}

impl Deployment {
    async fn start() -> Self {
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
    async fn new_device(&self) -> String {
        let thing = format!("frozen-{}", uuid::Uuid::new_v4().simple());
        let device = NewDevice {
            thing_name: ThingName::parse(&thing).unwrap(),
            vendor: VENDOR.into(),
            sku: Some("FROZEN-1".into()),
            code_hash: None,
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
    async fn function(&self, vars: &[(&str, &str)]) -> Served {
        let api = RuntimeApi::start(Vec::new()).await;
        let mut env = vec![
            ("CLAIMS_TABLE", self.table.name.as_str()),
            ("OEM_ENDPOINT", OEM_ENDPOINT),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb.url.as_str()),
            ("AWS_ENDPOINT_URL", self.moto.url.as_str()),
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
    async fn schedule(&self) -> ClaimService<DynamoOwnershipStore, SystemClock> {
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
struct Served {
    api: RuntimeApi,
    function: Function,
}

/// An API Gateway proxy response as the function returned it, and how long it took from outside.
#[derive(Debug)]
struct Answer {
    status: u64,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

impl Served {
    /// Sends one REST API event and waits for the function's answer (at most 60 s: a hang fails the
    /// test, it does not stall it).
    async fn send(&mut self, call: &Call<'_>) -> Answer {
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

    fn claim(thing: &str) -> Call<'static> {
        Call::claim(USER, thing)
    }

    fn devices() -> Call<'static> {
        Call::new("GET", "/v1/devices", USER)
    }

    /// The function's log events named `event`.
    fn events(&self, event: &str) -> Vec<Value> {
        self.function
            .json_lines()
            .into_iter()
            .filter(|line| line["event"] == event)
            .collect()
    }
}

fn assert_unavailable(answer: &Answer, budget: Duration, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {answer:?}");
    assert_eq!(answer.body["error"]["code"], "unavailable", "{what}: {answer:?}");
    assert_eq!(
        answer.retry_after.as_deref(),
        Some("1"),
        "{what}: Retry-After: {answer:?}"
    );
    assert!(
        answer.took < budget + SLACK,
        "{what}: answered after {:?}, budget {budget:?}",
        answer.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_table_answers_503_within_the_budget_and_writes_nothing() {
    let _serial = SERIAL.lock().await;
    let deployment = Deployment::start().await;
    let (thing, other) = (deployment.new_device().await, deployment.new_device().await);
    // As deployed (the default budget), and with a budget shorter than the SDK's deadline of one call.
    let mut default = deployment.function(&[]).await;
    let budget_ms = TIGHT_BUDGET.as_millis().to_string();
    let mut tight = deployment.function(&[("REQUEST_BUDGET_MS", &budget_ms)]).await;
    // Warm: clients built, connections to DynamoDB open, as in a warm execution environment.
    for served in [&mut default, &mut tight] {
        let warm = served.send(&Served::devices()).await;
        assert_eq!(warm.status, 200, "{warm:?}\n{}", served.function.output());
    }
    let before = deployment
        .table
        .store()
        .device(&ThingName::parse(&thing).unwrap())
        .await
        .unwrap();
    let history_before = deployment.table.items("history").await.len();

    let frozen = deployment.dynamodb.freeze();
    let claim = default.send(&Served::claim(&thing)).await;
    assert_unavailable(&claim, DEFAULT_BUDGET, "POST /v1/claims, table frozen");
    let list = default.send(&Served::devices()).await;
    assert_unavailable(&list, DEFAULT_BUDGET, "GET /v1/devices, table frozen");
    // The SDK's deadline of one call (2 s) ended these, before the budget: the log names DynamoDB.
    let failed: Vec<Value> = default
        .events("http_request")
        .into_iter()
        .filter(|line| line["status"] == 503)
        .collect();
    assert_eq!(failed.len(), 2, "{}", default.function.output());
    for line in &failed {
        let error = line["error"].as_str().unwrap_or_default();
        assert!(error.contains("DynamoDB"), "the dependency is named: {line}");
    }
    // A budget shorter than the SDK's deadline cuts the request itself, and says so.
    let cut = tight.send(&Served::claim(&thing)).await;
    assert_unavailable(&cut, TIGHT_BUDGET, "POST /v1/claims, table frozen, 1 s budget");
    let cut_list = tight.send(&Served::devices()).await;
    assert_unavailable(&cut_list, TIGHT_BUDGET, "GET /v1/devices, table frozen, 1 s budget");
    let exhausted = tight.events("request_budget_exhausted");
    assert_eq!(exhausted.len(), 2, "{}", tight.function.output());
    for line in &exhausted {
        assert_eq!(line["budget_ms"], 1000, "{line}");
        let latency = line["latency_ms"].as_u64().unwrap();
        assert!((1000..1000 + SLACK.as_millis() as u64).contains(&latency), "{line}");
    }
    // An invocation whose own deadline (the function's timeout) is nearer than the budget is
    // answered before it: the budget is cut to what it leaves, less 1 s.
    default.api.set_deadline(Duration::from_millis(2500));
    let near = default.send(&Served::devices()).await;
    assert_unavailable(
        &near,
        Duration::from_millis(1500),
        "GET /v1/devices, table frozen, 2.5 s left",
    );
    let near_cut = default.events("request_budget_exhausted");
    assert_eq!(near_cut.len(), 1, "{}", default.function.output());
    let cut_to = near_cut[0]["budget_ms"].as_u64().unwrap();
    assert!((1000..=1500).contains(&cut_to), "{}", near_cut[0]);
    default.api.set_deadline(claim_tests::runtime_api::INVOCATION_DEADLINE);
    eprintln!(
        "table frozen: default budget POST {:?} GET {:?}; 1 s budget POST {:?} GET {:?}; 2.5 s to the \
         invocation's deadline GET {:?}",
        claim.took, list.took, cut.took, cut_list.took, near.took
    );
    assert!(default.function.is_running() && tight.function.is_running());
    frozen.thaw();

    // Nothing of the refused claims landed, not even after the engine caught up with what it had
    // been sent while frozen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = deployment
        .table
        .store()
        .device(&ThingName::parse(&thing).unwrap())
        .await
        .unwrap();
    assert_eq!(after, before, "the device is unchanged");
    assert!(matches!(after.as_ref().map(|d| &d.holder), Some(Holder::Free)));
    assert!(deployment.table.items("claim").await.is_empty(), "no claim was written");
    assert_eq!(deployment.table.items("history").await.len(), history_before);

    // The same processes serve on: a claim is accepted and published.
    let accepted = default.send(&Served::claim(&thing)).await;
    assert_eq!(accepted.status, 202, "{accepted:?}\n{}", default.function.output());
    assert_eq!(accepted.body["state"], "endpoint_published", "{accepted:?}");
    let again = tight.send(&Served::claim(&other)).await;
    assert_eq!(again.status, 202, "{again:?}\n{}", tight.function.output());
    eprintln!(
        "after thawing: claims answered in {:?} and {:?}",
        accepted.took, again.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_secret_store_still_accepts_the_claim_and_names_the_credentials() {
    let _serial = SERIAL.lock().await;
    let deployment = Deployment::start().await;
    let (thing, later) = (deployment.new_device().await, deployment.new_device().await);
    let mut served = deployment.function(&[]).await;
    let warm = served.send(&Served::devices()).await;
    assert_eq!(warm.status, 200, "{warm:?}\n{}", served.function.output());

    let frozen = deployment.moto.freeze();
    let answer = served.send(&Served::claim(&thing)).await;
    assert_eq!(answer.status, 202, "{answer:?}\n{}", served.function.output());
    assert!(
        answer.took < DEFAULT_BUDGET + SLACK,
        "accepted after {:?}, budget {DEFAULT_BUDGET:?}",
        answer.took
    );
    assert_eq!(answer.body["state"], "pending", "{answer:?}");
    assert_eq!(
        answer.body["failure"]["code"], "credentials_unavailable",
        "the hung dependency is named, not the staging endpoint: {answer:?}"
    );
    let logged = served.events("claim_publish");
    let failed = logged
        .iter()
        .find(|line| line["error_code"] == "credentials_unavailable")
        .unwrap_or_else(|| panic!("{}", served.function.output()));
    assert!(
        failed["error"].as_str().unwrap_or_default().contains("Secrets Manager"),
        "{failed}"
    );
    // The table still answers: reads work while the secret store hangs.
    let list = served.send(&Served::devices()).await;
    assert_eq!(list.status, 200, "{list:?}");
    eprintln!(
        "secret store frozen: claim accepted in {:?}, devices listed in {:?}",
        answer.took, list.took
    );
    let claim_id = ClaimId::parse(answer.body["claim_id"].as_str().unwrap()).unwrap();
    let owed = deployment.table.store().claim(&claim_id).await.unwrap().unwrap();
    assert!(
        owed.next_publish_at.is_some(),
        "the claim is owed in the outbox: {owed:?}"
    );
    assert!(served.function.is_running());
    frozen.thaw();

    // The schedule delivers it once its backoff has passed.
    let schedule = deployment.schedule().await;
    let started = Instant::now();
    loop {
        let report = schedule.drain(Duration::from_secs(10)).await.unwrap();
        if report.published == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not delivered: {report:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let path = format!("/v1/claims/{claim_id}");
    let read = served.send(&Call::new("GET", &path, USER)).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["state"], "endpoint_published", "{read:?}");
    assert_eq!(read.body["failure"], Value::Null, "{read:?}");
    // And the function's own lookups work again.
    let next = served.send(&Served::claim(&later)).await;
    assert_eq!(next.status, 202, "{next:?}");
    assert_eq!(next.body["state"], "endpoint_published", "{next:?}");
}
