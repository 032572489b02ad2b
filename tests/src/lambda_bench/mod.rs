//! The claim path as Lambda runs it, measured from outside (`scripts/dev.sh bench --lambda`, the
//! `claim-bench-lambda` binary, and the 400-claim burst test): built function processes under
//! Runtime API emulators of their own (one process = one execution environment, K side by side),
//! fed API Gateway REST proxy events with a Cognito authorizer context, each implementation on a
//! DynamoDB Local of its own (a fresh engine: in one engine, a table's writes get dearer the more
//! stream records another table holds, so implementations sharing one would slow each other down;
//! the local stack's is slower still, after the tests) and the local stack's moto (Secrets Manager) and
//! Mosquitto with mutual TLS as the staging endpoint, reached through proxies that count every AWS
//! call; `claim-publisher` as one process fed
//! by the table's change stream; an MQTT observer that times every endpoint message; the broker's
//! log for AWS IoT's connection quotas. The same harness runs the Python baseline
//! (`tools/bench-baseline/`).

pub mod instance;
pub mod proc_stat;
pub mod publisher;
pub mod report;
pub mod round;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use claim_shared::{
    domain::{history::Actor, ids::ThingName, registry::NewDevice},
    service::{ClaimService, ClaimSettings, SystemClock},
};
use futures::StreamExt;

use crate::{
    engines::{CountingLink, Engine, Jit},
    fixture::LocalTable,
    local_claim_thing_secret, local_secrets,
    pki::LocalPki,
    put_claim_thing_secret,
    streams::TableStream,
    LocalStack,
};
use instance::Runtime;
use publisher::StreamFedPublisher;

/// How a round's vendor publishes its endpoint messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT to the staging broker: `claim-api` leaves the claims to the stream-fed publisher, and
    /// an MQTT observer times each message.
    Mqtt,
    /// HTTPS publishes (mutual TLS) to the staging endpoint: `claim-api` publishes in the request
    /// and answers `endpoint_published` once the endpoint confirmed; moto's recording says what
    /// arrived. The Python baseline speaks MQTT only.
    Https,
}

/// Where the harness's vendors keep their claim-thing secrets (as the local stack's functions).
pub const SECRET_PREFIX: &str = "expresslink/claim-thing/";

/// Devices imported at once while setting up (not measured).
const IMPORTS_AT_ONCE: usize = 16;

/// The local stack's moto and broker, as `.local/endpoints.env` describes them (each [`Side`]
/// brings a DynamoDB Local of its own).
pub struct Setup {
    pub local: LocalStack,
    pub pki: LocalPki,
}

/// One implementation's way to the engines: its table in a DynamoDB Local of its own, and proxies
/// that count its calls.
pub struct Side {
    pub table: LocalTable,
    pub dynamodb: CountingLink,
    pub moto: CountingLink,
    /// The engine of the table, stopped when the last side on it is dropped.
    engine: Arc<Engine>,
}

impl Side {
    /// The DynamoDB Local process of the side's table (its CPU time is a round's figure).
    pub fn engine_pid(&self) -> u32 {
        self.engine.pid()
    }

    /// Waits until the side's engine is idle (under 3 % of a core over a second: its JIT compilers
    /// are done), at most `limit`; how long that took.
    pub async fn engine_settled(&self, limit: std::time::Duration) -> std::time::Duration {
        let started = std::time::Instant::now();
        let second = std::time::Duration::from_secs(1);
        while started.elapsed() < limit {
            let before = proc_stat::cpu_time(self.engine_pid()).unwrap_or_default();
            tokio::time::sleep(second).await;
            let used = proc_stat::cpu_time(self.engine_pid())
                .unwrap_or_default()
                .saturating_sub(before);
            if used.as_secs_f64() < 0.03 {
                break;
            }
        }
        started.elapsed()
    }
}

impl Setup {
    pub async fn connect() -> Self {
        let local = LocalStack::from_env();
        let pki = LocalPki::ensure(&local.pki_dir)
            .unwrap_or_else(|err| panic!("local PKI: {err} (is the local stack up? scripts/dev.sh up)"));
        Self { local, pki }
    }

    /// A fresh DynamoDB Local with a table (from `template.yaml`, with its stream), and counting
    /// proxies to the engines.
    pub async fn side(&self) -> Side {
        self.side_with(Jit::C1Only).await
    }

    /// [`Self::side`] on an engine whose JVM compiles as `jit` says.
    pub async fn side_with(&self, jit: Jit) -> Side {
        let engine = Arc::new(Engine::dynamodb_with(jit).await);
        let table = LocalTable::fresh_with_stream_on(crate::dynamodb_at(&engine.url).await).await;
        self.side_on(table, engine).await
    }

    /// `table` (in `engine`) and counting proxies of their own to the engines.
    async fn side_on(&self, table: LocalTable, engine: Arc<Engine>) -> Side {
        Side {
            table,
            dynamodb: CountingLink::start(&engine.url).await,
            moto: CountingLink::start(&self.local.moto_url).await,
            engine,
        }
    }

    /// `claim-publisher` (`binary`) as one process fed by the change stream of `side`'s table, and
    /// the proxies its calls go through (to count them).
    pub async fn stream_fed_publisher(&self, binary: &Path, side: &Side) -> (StreamFedPublisher, Side) {
        let own = self.side_on(side.table.clone(), side.engine.clone()).await;
        let aws = crate::local_sdk_config_at(&side.engine.url).await;
        let stream = TableStream::open(&aws, Some(side.engine.url.clone()), &side.table.name).await;
        (
            StreamFedPublisher::start(&self.function(binary, &own), stream).await,
            own,
        )
    }

    /// A new module vendor whose claim-thing (a client id of its own) publishes to the staging
    /// listener; its name and client id.
    pub async fn new_vendor(&self, prefix: &str) -> (String, String) {
        self.new_vendor_over(prefix, Transport::Mqtt).await
    }

    /// [`Self::new_vendor`] publishing over `transport`: `mqtt` to the staging broker, `https` to
    /// the local HTTPS staging endpoint (nginx, mutual TLS, passing publishes on to moto).
    pub async fn new_vendor_over(&self, prefix: &str, transport: Transport) -> (String, String) {
        let vendor = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let profile = self.claim_thing_profile(transport);
        let client_id = profile["client_id"].as_str().unwrap_or_default().to_owned();
        put_claim_thing_secret(&local_secrets().await, &format!("{SECRET_PREFIX}{vendor}"), &profile)
            .await
            .unwrap_or_else(|err| panic!("secret of {vendor}: {err}"));
        (vendor, client_id)
    }

    /// A claim-thing profile (the secret's JSON) of a client id of its own, over `transport`.
    fn claim_thing_profile(&self, transport: Transport) -> serde_json::Value {
        let profile = local_claim_thing_secret(&self.pki, self.local.staging_port).and_then(|mut profile| {
            if transport == Transport::Https {
                let identity = self.pki.client(crate::pki::CLAIM_THING)?;
                let client_id = profile["client_id"].clone();
                profile = crate::iotdata::https_profile(&self.pki, &identity, self.local.https_staging_port)?;
                profile["client_id"] = client_id;
            }
            Ok(profile)
        });
        profile.unwrap_or_else(|err| panic!("claim-thing profile: {err}"))
    }

    /// What the local HTTPS staging endpoint (nginx passing publishes on to moto) takes at most:
    /// `count` endpoint messages sent by the product's own HTTPS adapter alone
    /// ([`HttpsPublisher::publish_batch`](claim_shared::adapters::iotdata::HttpsPublisher), its
    /// pooled connections, 16 at a time), no claim, no table; messages per second. The ceiling any
    /// `https` round can reach on this machine.
    pub async fn https_endpoint_rate(&self, count: usize) -> f64 {
        use claim_shared::{
            domain::{ids::ConfigTopic, publish::ClaimThingCredentials},
            ports::EndpointPublisher as _,
        };
        let profile = self.claim_thing_profile(Transport::Https).to_string();
        let credentials =
            ClaimThingCredentials::parse(&profile).unwrap_or_else(|err| panic!("claim-thing profile: {err}"));
        let run = uuid::Uuid::new_v4().simple().to_string();
        let messages: Vec<(ConfigTopic, Vec<u8>)> = (0..count)
            .map(|i| {
                let thing = ThingName::parse(&format!("ceiling-{run}-{i}")).unwrap_or_else(|err| panic!("{err}"));
                (ConfigTopic::for_device(&thing), b"{}".to_vec())
            })
            .collect();
        let https = claim_shared::adapters::iotdata::HttpsPublisher::default();
        // The connections are opened (and kept) by a first message, as a warm function has them.
        let _ = https.publish_batch(&credentials, &messages[..1]).await;
        let started = std::time::Instant::now();
        let results = https.publish_batch(&credentials, &messages).await;
        let elapsed = started.elapsed().as_secs_f64();
        if let Some(Err(err)) = results.iter().find(|result| result.is_err()) {
            panic!("the HTTPS staging endpoint refused a publish: {err}");
        }
        count as f64 / elapsed
    }

    /// `count` new devices of `vendor` in `table`, imported as an operator would; their ThingNames.
    pub async fn import(&self, table: &LocalTable, vendor: &str, count: usize) -> Vec<String> {
        let service = ClaimService::new(table.store(), SystemClock, ClaimSettings::default());
        let service = &service;
        futures::stream::iter(0..count)
            .map(|i| async move {
                let thing = format!("{vendor}-{i}");
                let device = NewDevice {
                    thing_name: ThingName::parse(&thing).unwrap_or_else(|err| panic!("{thing}: {err}")),
                    vendor: vendor.to_owned(),
                    sku: Some("BENCH-1".into()),
                    code_hash: None,
                    allow_thing_name: None,
                    code_as_thing_name: None,
                };
                if let Err(err) = service.import(&device, Actor::Operator("bench".into())).await {
                    panic!("import {thing}: {err}");
                }
                thing
            })
            .buffered(IMPORTS_AT_ONCE)
            .collect()
            .await
    }

    /// A Rust function (`claim-api`, `claim-publisher`) on `side`'s table, through its proxies.
    pub fn function(&self, binary: &Path, side: &Side) -> Runtime {
        Runtime {
            program: binary.display().to_string(),
            args: Vec::new(),
            vars: self.vars(side),
        }
    }

    /// The Python baseline (`tools/bench-baseline/handler.py` under awslambdaric, as Lambda's
    /// Python runtime runs a handler) for `vendor`, on `side`'s table, through its proxies.
    pub fn python_baseline(&self, python: &Path, side: &Side, vendor: &str) -> Runtime {
        let mut vars = self.vars(side);
        vars.push(("BASELINE_VENDOR".into(), vendor.to_owned()));
        vars.push(("PYTHONPATH".into(), baseline_dir().display().to_string()));
        vars.push(("AWS_DEFAULT_REGION".into(), "us-east-1".into()));
        Runtime {
            program: python.display().to_string(),
            args: ["-m", "awslambdaric", "handler.handler"].map(str::to_owned).to_vec(),
            vars,
        }
    }

    fn vars(&self, side: &Side) -> Vec<(String, String)> {
        [
            ("CLAIMS_TABLE", side.table.name.as_str()),
            ("OEM_ENDPOINT", self.local.oem_endpoint.as_str()),
            ("AWS_ENDPOINT_URL_DYNAMODB", side.dynamodb.url.as_str()),
            ("AWS_ENDPOINT_URL", side.moto.url.as_str()),
            ("CLAIM_THING_SECRET_PREFIX", SECRET_PREFIX),
            // DynamoDB Local keeps tables per access key: the harness's (`local_sdk_config_at`).
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .to_vec()
    }

    /// The broker's log as it is now.
    pub fn broker_log(&self) -> String {
        std::fs::read_to_string(self.local.broker_log()).unwrap_or_default()
    }
}

/// `tools/bench-baseline/`.
pub fn baseline_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/bench-baseline")
}

/// A binary built into the same target directory and profile as the running executable (a test
/// binary in `<target>/<profile>/deps/`, or a binary in `<target>/<profile>/`), e.g. `claim-api`.
pub fn built_beside(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|err| panic!("this executable's path: {err}"));
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built beside {} (cargo build --bin {name})",
                exe.display()
            )
        })
}
