//! The deadlines of delivering a claim's endpoint message (`service/outbox.rs`): reading the vendor
//! profile has its own, so a hung credential store is named as such (`credentials_unavailable`)
//! instead of passing for a staging timeout; an inline publish fits in what the request's deadline
//! leaves, so a slow staging endpoint never costs an accepted claim its answer; with no time left
//! the claim is left owed, untried. The credential store and the staging endpoint are fakes that
//! hang; the store is real. A table that hangs during a stream delivery (a private DynamoDB Local,
//! frozen from outside) is waited out, not left to the schedule; one that hangs between a
//! delivery's pieces loses no claim.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration as StdDuration,
};

use async_trait::async_trait;
use claim_shared::wiring::Wiring;
use claim_shared::{
    domain::{
        claim::{Claim, ClaimState},
        ids::ConfigTopic,
        publish::{ClaimThingCredentials, PublishError},
    },
    ports::{CredentialSource, EndpointPublisher, OwnershipStore},
    service::{ClaimOutcome, ClaimService, ClaimSettings, Clock, Delivery, DeliverySettings},
};
use claim_tests::{
    engines::Engine,
    fixture::{Fixture, LocalTable, TestStore},
    local_sdk_config_at, on_both_stores, FixedCredentials, ManualClock,
};
use tokio::time::Instant;

use super::{request, CapturedLogs, Steps};

on_both_stores!(
    a_hung_credential_store_fails_the_attempt_as_credentials_unavailable_in_time,
    a_slow_staging_endpoint_is_cut_off_before_the_requests_deadline,
    with_no_time_left_the_claim_stays_owed_and_nothing_is_tried,
);

/// A credential store that never answers (Secrets Manager frozen).
struct HungCredentials;

#[async_trait]
impl CredentialSource for HungCredentials {
    async fn claim_thing(&self, _vendor: &str) -> Result<ClaimThingCredentials, PublishError> {
        std::future::pending().await
    }

    fn source_name(&self) -> &'static str {
        "the hung test store"
    }
}

/// A staging endpoint that takes `delay` to confirm, counting the publishes it was given.
pub(super) struct SlowStaging {
    delay: StdDuration,
    pub(super) publishes: AtomicUsize,
}

#[async_trait]
impl EndpointPublisher for SlowStaging {
    async fn publish(&self, _: &ClaimThingCredentials, _: &ConfigTopic, _: &[u8]) -> Result<(), PublishError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

pub(super) fn slow_staging(delay: StdDuration) -> Arc<SlowStaging> {
    Arc::new(SlowStaging {
        delay,
        publishes: AtomicUsize::new(0),
    })
}

pub(super) fn delivering<S: TestStore>(
    fx: &Fixture<S>,
    credentials: Arc<dyn CredentialSource>,
    staging: Arc<SlowStaging>,
    settings: DeliverySettings,
) -> ClaimService<S, ManualClock> {
    fx.service_with(ClaimSettings::default())
        .with_delivery(Delivery::new(credentials, staging, settings))
}

/// `device` claimed by `who` through the API's path (`claim_and_publish`, the request's `deadline`)
/// with the vendor's transport as `credentials` says and a staging endpoint that confirms after
/// `delay`: the service, the staging endpoint and the new claim.
pub(super) async fn claim_with_staging<S: TestStore>(
    fx: &Fixture<S>,
    credentials: FixedCredentials,
    (who, device): (&str, &str),
    delay: StdDuration,
    deadline: Instant,
) -> (ClaimService<S, ManualClock>, Arc<SlowStaging>, Claim) {
    let staging = slow_staging(delay);
    let service = delivering(fx, Arc::new(credentials), staging.clone(), DeliverySettings::default());
    let outcome = service
        .claim_and_publish(&request(who, device, None), Some(deadline))
        .await
        .unwrap();
    let ClaimOutcome::Created(claim) = outcome else {
        panic!("accepted: {outcome:?}")
    };
    (service, staging, claim)
}

async fn a_hung_credential_store_fails_the_attempt_as_credentials_unavailable_in_time<S: TestStore>(fx: Fixture<S>) {
    fx.import("hung-secrets-1").await;
    let staging = slow_staging(StdDuration::ZERO);
    let settings = DeliverySettings {
        credentials_timeout: StdDuration::from_millis(300),
        ..DeliverySettings::default()
    };
    let service = delivering(&fx, Arc::new(HungCredentials), staging.clone(), settings);
    let logs = CapturedLogs::new();
    let started = Instant::now();
    let deadline = started + StdDuration::from_secs(3);
    let outcome = logs
        .during(service.claim_and_publish(&request("alice", "hung-secrets-1", None), Some(deadline)))
        .await
        .unwrap();
    let ClaimOutcome::Created(claim) = outcome else {
        panic!("accepted: {outcome:?}")
    };
    assert!(Instant::now() < deadline, "answered in {:?}", started.elapsed());
    assert_eq!(claim.effective_state(fx.clock.now()), ClaimState::Pending);
    let failure = claim.failure.as_ref().expect("the failed attempt is recorded");
    assert_eq!(failure.code, "credentials_unavailable", "not a staging failure");
    assert!(claim.next_publish_at.is_some(), "still owed");
    assert_eq!(
        staging.publishes.load(Ordering::SeqCst),
        0,
        "nothing sent without a profile"
    );
    let logged = logs
        .events()
        .into_iter()
        .find(|event| event["event"] == "claim_publish")
        .unwrap_or_else(|| panic!("{}", logs.text()));
    assert_eq!(logged["error_code"], "credentials_unavailable");
    assert_eq!(
        logged["error"], "the hung test store did not answer within 300 ms",
        "the dependency is named"
    );

    // The schedule's drain does not wait out its whole budget for it either.
    fx.clock.advance(time::Duration::minutes(1));
    let started = Instant::now();
    let report = service.drain(StdDuration::from_secs(30)).await.unwrap();
    assert_eq!((report.published, report.failed), (0, 1), "{report:?}");
    assert!(
        started.elapsed() < StdDuration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let claim = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(claim.publish_attempts, 2);
}

async fn a_slow_staging_endpoint_is_cut_off_before_the_requests_deadline<S: TestStore>(fx: Fixture<S>) {
    fx.import("slow-staging-1").await;
    let started = Instant::now();
    // The inline budget alone (3 s) would run past it.
    let deadline = started + StdDuration::from_millis(2500);
    let (_, staging, claim) = claim_with_staging(
        &fx,
        FixedCredentials::INLINE,
        ("bob", "slow-staging-1"),
        StdDuration::from_secs(30),
        deadline,
    )
    .await;
    let answered = Instant::now();
    assert!(answered < deadline, "answered in {:?}", answered - started);
    assert!(
        answered - started >= StdDuration::from_millis(1900),
        "the publish had the budget minus the record reserve: {:?}",
        answered - started
    );
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 1);
    assert_eq!(claim.failure.as_ref().map(|f| f.code.as_str()), Some("staging_timeout"));
    assert!(claim.next_publish_at.is_some(), "owed: the schedule publishes it again");
}

async fn with_no_time_left_the_claim_stays_owed_and_nothing_is_tried<S: TestStore>(fx: Fixture<S>) {
    fx.import("no-time-1").await;
    // Less than the record reserve (500 ms) plus the least worth trying (250 ms).
    let deadline = Instant::now() + StdDuration::from_millis(600);
    let (_, staging, claim) = claim_with_staging(
        &fx,
        FixedCredentials::INLINE,
        ("carol", "no-time-1"),
        StdDuration::ZERO,
        deadline,
    )
    .await;
    assert!(Instant::now() < deadline);
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 0);
    assert_eq!((claim.publish_attempts, claim.failure.clone()), (0, None));
    let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert!(stored.next_publish_at.is_some(), "owed in the outbox: {stored:?}");
}

/// The stream-fed publisher meets a table that hangs (a private DynamoDB Local, `SIGSTOP`ped for
/// longer than a call's deadline, then continued): it waits the storage errors out and tries the
/// vendor's claims again, read afresh, within its budget, instead of leaving them to the
/// schedule; each message goes out once and is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivery_waits_out_a_table_that_hangs_and_publishes_each_claim_once() {
    let dynamodb = Engine::dynamodb().await;
    // The deployed functions' deadlines (1 s an attempt, 2 s a call), so the freeze fails calls.
    let wiring = Wiring::from_config(local_sdk_config_at(&dynamodb.url).await);
    let table = LocalTable::fresh_on(aws_sdk_dynamodb::Client::new(wiring.aws())).await;
    let (store, probe) = table.into_store();
    let fx = Fixture::on(store, probe, ClaimSettings::default());
    let deadline = || Instant::now() + StdDuration::from_secs(3);
    fx.import("hung-table-1").await;
    fx.import("hung-table-2").await;
    // The first claim's service delivers both: over mqtt the API left them owed.
    let (publisher, staging, first) = claim_with_staging(
        &fx,
        FixedCredentials::MQTT,
        ("alice", "hung-table-1"),
        StdDuration::ZERO,
        deadline(),
    )
    .await;
    let (_, _, second) = claim_with_staging(
        &fx,
        FixedCredentials::MQTT,
        ("bob", "hung-table-2"),
        StdDuration::ZERO,
        deadline(),
    )
    .await;
    let owed = [first, second];
    for claim in &owed {
        assert!(claim.next_publish_at.is_some(), "owed to the publisher: {claim:?}");
    }

    let frozen = dynamodb.freeze();
    let (report, ()) = tokio::join!(publisher.deliver_streamed(&owed, StdDuration::from_secs(45)), async {
        tokio::time::sleep(StdDuration::from_secs(3)).await;
        frozen.thaw();
    });
    let report = report.unwrap_or_else(|err| panic!("the delivery gave up: {err}\n{}", dynamodb.log()));
    assert_eq!(
        (report.published, report.failed, report.busy_vendors),
        (2, 0, 0),
        "{report:?}"
    );
    assert!(report.store_retries >= 1, "the freeze failed calls: {report:?}");
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 2, "each message once");
    for claim in &owed {
        let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
        assert_eq!(stored.state, ClaimState::EndpointPublished, "{stored:?}");
        assert_eq!(stored.next_publish_at, None, "out of the outbox: {stored:?}");
    }
}

/// A staging endpoint that confirms at once and, at its first publish, freezes `engine` for
/// `freeze_for`: the table hangs while a delivery is between its pieces (some read, some sent,
/// their records on their way). Remembers every topic it was given.
struct FreezingStaging {
    engine: Arc<Engine>,
    freeze_for: StdDuration,
    topics: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl EndpointPublisher for FreezingStaging {
    async fn publish(&self, _: &ClaimThingCredentials, topic: &ConfigTopic, _: &[u8]) -> Result<(), PublishError> {
        let first = {
            let mut topics = self.topics.lock().unwrap();
            topics.push(topic.as_str().to_owned());
            topics.len() == 1
        };
        if first {
            let frozen = self.engine.freeze();
            let freeze_for = self.freeze_for;
            tokio::spawn(async move {
                tokio::time::sleep(freeze_for).await;
                frozen.thaw();
            });
        }
        Ok(())
    }
}

/// The table hangs in the middle of a stream delivery of 40 claims (two pieces): after the first
/// message, for longer than a call's deadline. Whatever was read, sent or recorded by then, no
/// claim is lost: the delivery and then the schedule send every message at least once (those sent
/// but not recorded again, at least once as promised, never more than twice) and record every
/// claim, out of the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_hangs_between_a_deliverys_pieces_loses_no_claim() {
    let dynamodb = Arc::new(Engine::dynamodb().await);
    // The deployed functions' deadlines (1 s an attempt, 2 s a call), so the freeze fails calls.
    let wiring = Wiring::from_config(local_sdk_config_at(&dynamodb.url).await);
    let table = LocalTable::fresh_on(aws_sdk_dynamodb::Client::new(wiring.aws())).await;
    let (store, probe) = table.into_store();
    let fx = Fixture::on(store, probe, ClaimSettings::default());
    let api = delivering(
        &fx,
        Arc::new(FixedCredentials::MQTT),
        slow_staging(StdDuration::ZERO),
        DeliverySettings::default(),
    );
    let mut owed = Vec::new();
    for i in 0..40 {
        let device = format!("hung-piece-{i}");
        fx.import(&device).await;
        let ClaimOutcome::Created(claim) = api.claim(&request("alice", &device, None)).await.unwrap() else {
            panic!("{device}: accepted")
        };
        owed.push(claim);
    }
    let staging = Arc::new(FreezingStaging {
        engine: dynamodb.clone(),
        freeze_for: StdDuration::from_secs(3),
        topics: std::sync::Mutex::new(Vec::new()),
    });
    let publisher = fx.service_with(ClaimSettings::default()).with_delivery(Delivery::new(
        Arc::new(FixedCredentials::MQTT),
        staging.clone(),
        DeliverySettings::default(),
    ));

    let streamed = publisher.deliver_streamed(&owed, StdDuration::from_secs(45)).await;
    let mut still_owed = 0;
    for claim in &owed {
        let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
        still_owed += usize::from(stored.next_publish_at.is_some());
    }
    // The freeze hit the delivery: a call failed and was waited out, or records did not land.
    assert!(
        streamed.as_ref().is_ok_and(|report| report.store_retries >= 1) || still_owed > 0,
        "{streamed:?}, {still_owed} owed\n{}",
        dynamodb.log()
    );
    // What is left the schedule sends.
    publisher.drain(StdDuration::from_secs(30)).await.unwrap();

    let topics = staging.topics.lock().unwrap().clone();
    for claim in &owed {
        let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
        assert_eq!(stored.state, ClaimState::EndpointPublished, "{stored:?}");
        assert_eq!(stored.next_publish_at, None, "out of the outbox: {stored:?}");
        let topic = ConfigTopic::for_device(&claim.thing_name);
        let sent = topics.iter().filter(|sent| **sent == topic.as_str()).count();
        assert!((1..=2).contains(&sent), "{}: sent {sent} times", claim.thing_name);
    }
}
