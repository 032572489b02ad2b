//! Use-case rules: the claim service's use cases on a store, each test body run on both stores
//! (`memory::…` needs no engine and takes milliseconds; `dynamodb::…` runs on DynamoDB Local).
//! Each test works on a store of its own, so they run in parallel.

// A failed expectation in a test is the test failing: unwrap/expect are the right tool here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod claiming;
mod deadlines;
mod inline_publish;
mod label_codes;
mod lifecycle;
mod quarantine;

use std::sync::Arc;

use claim_shared::{
    domain::{
        endpoints::EndpointPlan,
        history::{Actor, HistoryEntry, HistoryEvent},
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
        registry::NewDevice,
    },
    service::{ArrivalOutcome, ClaimOutcome, ClaimRequest, ImportOutcome, Inspection, Progress},
};
use claim_tests::fixture::{Fixture, TestStore};

const ENDPOINT: &str = "oem-ats.iot.eu-west-1.amazonaws.com";

fn thing(name: &str) -> ThingName {
    ThingName::parse(name).expect("valid thing name")
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid user id")
}

fn request(who: &str, device: &str, key: Option<&str>) -> ClaimRequest {
    ClaimRequest {
        user: user(who),
        code: thing(device).into(),
        endpoints: Arc::new(EndpointPlan::single(ENDPOINT)),
        region_hint: None,
        idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("valid key")),
    }
}

/// History entries are numbered 1..=n without gaps.
fn assert_contiguous(history: &[HistoryEntry]) {
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=history.len() as u64).collect();
    assert_eq!(seqs, expected, "history numbering has a gap or a duplicate");
}

/// The steps the tests are written in.
trait Steps {
    async fn import(&self, device: &str);
    /// The inspection of `device` for the user `who` (as support asks it).
    async fn inspect_for(&self, device: &str, who: &str) -> Inspection;
    async fn history(&self, device: &str) -> Vec<HistoryEntry>;
    async fn events(&self, device: &str) -> Vec<(HistoryEvent, Option<ClaimId>)>;
    async fn claim_and_own(&self, who: &str, device: &str) -> ClaimId;
}

impl<S: TestStore> Steps for Fixture<S> {
    async fn import(&self, device: &str) {
        let outcome = self
            .service
            .import(
                &NewDevice {
                    thing_name: thing(device),
                    vendor: "espressif".into(),
                    sku: Some("KETTLE-2".into()),
                    code_hash: None,
                    allow_thing_name: None,
                    code_as_thing_name: None,
                },
                Actor::Operator("factory-import".into()),
            )
            .await
            .expect("import");
        assert_eq!(outcome, ImportOutcome::Created);
    }

    async fn inspect_for(&self, device: &str, who: &str) -> Inspection {
        self.service
            .inspect_for(&thing(device), Some(&user(who)))
            .await
            .expect("inspect")
    }

    async fn history(&self, device: &str) -> Vec<HistoryEntry> {
        self.store.history(&thing(device)).await.expect("history")
    }

    async fn events(&self, device: &str) -> Vec<(HistoryEvent, Option<ClaimId>)> {
        self.history(device)
            .await
            .into_iter()
            .map(|entry| (entry.event, entry.claim_id))
            .collect()
    }

    async fn claim_and_own(&self, who: &str, device: &str) -> ClaimId {
        let ClaimOutcome::Created(claim) = self.service.claim(&request(who, device, None)).await.expect("claim") else {
            panic!("expected a new claim");
        };
        assert!(matches!(
            self.service.mark_published(&claim.claim_id).await,
            Ok(Progress::Applied(_))
        ));
        assert!(matches!(
            self.service.mark_provisioned(&claim.claim_id).await,
            Ok(ArrivalOutcome::Completed(_))
        ));
        claim.claim_id
    }
}

/// What the code under test logs, as the JSON lines CloudWatch would receive. One subscriber for
/// the whole test binary (a per-thread one races with the other tests over tracing's callsite
/// cache); each capture picks its own lines out by the span it runs its work in.
struct CapturedLogs {
    id: String,
}

/// Every line logged inside a `capture` span, from every test of the binary.
fn captured_lines() -> &'static Arc<std::sync::Mutex<Vec<u8>>> {
    static LINES: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = CaptureWriter(Arc::clone(&lines));
        // The functions' own format (flat JSON, span fields at the top), at their default level.
        use tracing_subscriber::{filter::LevelFilter, layer::SubscriberExt, Layer};
        let layer = claim_shared::logging::json_layer(move || writer.clone()).with_filter(LevelFilter::INFO);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        lines
    })
}

#[derive(Clone)]
struct CaptureWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Lines outside any capture are not kept.
        if buf.windows(9).any(|w| w == b"\"capture\"") {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn new() -> Self {
        captured_lines();
        Self {
            id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Runs `work` inside this capture's span.
    async fn during<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        use tracing::Instrument;
        work.instrument(tracing::info_span!("capture", capture = %self.id))
            .await
    }

    /// This capture's lines, parsed.
    fn events(&self) -> Vec<serde_json::Value> {
        let bytes = captured_lines().lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|event| event["capture"] == self.id.as_str())
            .collect()
    }

    /// This capture's lines as text.
    fn text(&self) -> String {
        self.events().iter().map(|event| format!("{event}\n")).collect()
    }

    /// The fields of every `claim_decision` event.
    fn claim_decisions(&self) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|event| event["event"] == "claim_decision")
            .collect()
    }
}
