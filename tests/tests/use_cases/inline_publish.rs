//! Who delivers an accepted claim's endpoint message (`service/outbox.rs`). Over `https`/`iam` the
//! API publishes it in the request, recorded on the claim as committed (nothing read back) and
//! without the vendor's lease, so any number of API instances publish in parallel. Over `mqtt`
//! the API answers at once with the claim owed, and the stream-fed publisher
//! (`deliver_streamed`) sends it: only when it is due, once, under the vendor's lease. The staging
//! endpoint is a fake that confirms at once; the store is real.

use std::{sync::atomic::Ordering, sync::Arc, time::Duration as StdDuration};

use claim_shared::{
    domain::{
        claim::{Claim, ClaimState},
        history::HistoryEvent,
        publish::PublishError,
    },
    service::{ClaimOutcome, ClaimService, Clock, DeliverySettings, INLINE_GRACE},
};
use claim_tests::{
    fixture::{Fixture, TestStore},
    on_both_stores, FixedCredentials, ManualClock,
};
use tokio::time::Instant;

use super::{
    deadlines::{claim_with_staging, delivering, slow_staging, SlowStaging},
    request, Steps,
};

on_both_stores!(
    an_https_claim_is_published_in_the_request_even_while_a_delivery_holds_the_vendor_lease,
    an_mqtt_claim_is_answered_owed_and_the_stream_delivery_publishes_it_once,
    a_stream_delivery_waits_for_a_failed_publishs_backoff_and_leaves_https_claims_to_the_api,
    a_publisher_keeping_its_lease_renews_it_only_after_5_s_and_never_gives_it_back,
    a_stream_delivery_carries_on_with_its_vendors_claims_that_became_due_meanwhile,
    a_drain_leaves_an_https_claim_to_the_request_publishing_it_until_that_request_is_surely_over,
);

const LEASE: &str = "publisher#espressif";

/// `device` claimed by alice through the API's path with the vendor's transport as `credentials`
/// says, and a staging endpoint that confirms at once.
async fn claim_over<S: TestStore>(
    fx: &Fixture<S>,
    credentials: FixedCredentials,
    device: &str,
) -> (ClaimService<S, ManualClock>, Arc<SlowStaging>, Claim) {
    let deadline = Instant::now() + StdDuration::from_secs(3);
    claim_with_staging(fx, credentials, ("alice", device), StdDuration::ZERO, deadline).await
}

async fn an_https_claim_is_published_in_the_request_even_while_a_delivery_holds_the_vendor_lease<S: TestStore>(
    fx: Fixture<S>,
) {
    fx.import("inline-1").await;
    let now = fx.clock.now();
    let until = now + time::Duration::seconds(30);
    // The schedule is draining this vendor; an https publish needs no client id of its own.
    assert!(fx.store.acquire_lease(LEASE, "the-schedule", now, until).await.unwrap());
    let (_, staging, claim) = claim_over(&fx, FixedCredentials::INLINE, "inline-1").await;
    assert_eq!(claim.effective_state(fx.clock.now()), ClaimState::EndpointPublished);
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 1);
    // The answer is the claim as stored, though nothing was read back.
    let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(stored, claim);
    // The publish is recorded on the claim alone (its own history says when); the device's
    // history keeps ownership changes.
    let states: Vec<ClaimState> = claim.history.iter().map(|change| change.state).collect();
    assert_eq!(states, [ClaimState::Pending, ClaimState::EndpointPublished]);
    assert_eq!(
        fx.events("inline-1").await,
        [
            (HistoryEvent::Imported, None),
            (HistoryEvent::Claimed, Some(claim.claim_id.clone())),
        ]
    );
    assert!(
        !fx.store.acquire_lease(LEASE, "someone-else", now, until).await.unwrap(),
        "the schedule's lease was left alone"
    );
}

async fn an_mqtt_claim_is_answered_owed_and_the_stream_delivery_publishes_it_once<S: TestStore>(fx: Fixture<S>) {
    fx.import("stream-1").await;
    let (service, staging, claim) = claim_over(&fx, FixedCredentials::MQTT, "stream-1").await;
    assert_eq!(claim.effective_state(fx.clock.now()), ClaimState::Pending);
    assert!(claim.next_publish_at.is_some(), "owed in the outbox");
    assert_eq!(
        staging.publishes.load(Ordering::SeqCst),
        0,
        "the API never sends over mqtt"
    );
    // The stream reports the claim as written; the publisher sends it.
    let report = service
        .deliver_streamed(std::slice::from_ref(&claim), StdDuration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (report.published, report.failed, report.busy_vendors),
        (1, 0, 0),
        "{report:?}"
    );
    let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(stored.effective_state(fx.clock.now()), ClaimState::EndpointPublished);
    // The stream delivers at least once: the same record again (a retried batch) sends nothing,
    // because the claim is read afresh.
    let again = service
        .deliver_streamed(std::slice::from_ref(&claim), StdDuration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(again.published, 0, "{again:?}");
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 1);
    // The lease was given back.
    let now = fx.clock.now();
    assert!(fx
        .store
        .acquire_lease(LEASE, "the-next-delivery", now, now + time::Duration::seconds(30))
        .await
        .unwrap());
}

async fn a_stream_delivery_waits_for_a_failed_publishs_backoff_and_leaves_https_claims_to_the_api<S: TestStore>(
    fx: Fixture<S>,
) {
    fx.import("stream-2").await;
    let (service, staging, claim) = claim_over(&fx, FixedCredentials::MQTT, "stream-2").await;
    // A failed attempt: due again only after the backoff (2 s).
    service
        .record_publish(
            &claim.claim_id,
            &claim_shared::service::PublishAttempt::Failed(PublishError::new("staging_unreachable", "test")),
        )
        .await
        .unwrap();
    let failed = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert!(failed.next_publish_at.is_some_and(|at| at > fx.clock.now()));
    let report = service
        .deliver_streamed(std::slice::from_ref(&failed), StdDuration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.published, 0, "not due yet: {report:?}");
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 0);
    fx.clock.advance(time::Duration::seconds(3));
    let report = service
        .deliver_streamed(&[failed], StdDuration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.published, 1, "due after the backoff: {report:?}");

    // An https vendor's claim reported owed (the API is publishing it) is not the stream's.
    fx.import("stream-3").await;
    let staging_https = slow_staging(StdDuration::ZERO);
    let https = delivering(
        &fx,
        Arc::new(FixedCredentials::INLINE),
        staging_https.clone(),
        DeliverySettings::default(),
    );
    let ClaimOutcome::Created(owed) = https.claim(&request("alice", "stream-3", None)).await.unwrap() else {
        panic!("accepted")
    };
    let report = https
        .deliver_streamed(&[owed], StdDuration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.published, 0, "{report:?}");
    assert_eq!(staging_https.publishes.load(Ordering::SeqCst), 0);
}

/// The API (claims over `mqtt` left owed) and a stream-fed publisher with `settings` on the
/// fixture's store, and the staging endpoint the publisher sends to.
fn api_and_publisher<S: TestStore>(
    fx: &Fixture<S>,
    settings: DeliverySettings,
) -> (
    ClaimService<S, ManualClock>,
    ClaimService<S, ManualClock>,
    Arc<SlowStaging>,
) {
    let mqtt = || Arc::new(FixedCredentials::MQTT);
    let api = delivering(fx, mqtt(), slow_staging(StdDuration::ZERO), DeliverySettings::default());
    let staging = slow_staging(StdDuration::ZERO);
    let publisher = delivering(fx, mqtt(), staging.clone(), settings);
    (api, publisher, staging)
}

/// alice's claim of `device`, accepted.
async fn accepted<S: TestStore>(api: &ClaimService<S, ManualClock>, device: &str) -> Claim {
    let ClaimOutcome::Created(owed) = api.claim(&request("alice", device, None)).await.unwrap() else {
        panic!("{device}: accepted")
    };
    owed
}

/// `claim-publisher` keeps its vendor lease between deliveries (`service/lease.rs`): a delivery
/// within 5 s of the last take uses it without renewing it, a later one renews it, and nothing is
/// given back, so another deliverer gets the lease once it lapsed, 30 s after the last take.
async fn a_publisher_keeping_its_lease_renews_it_only_after_5_s_and_never_gives_it_back<S: TestStore>(fx: Fixture<S>) {
    let seconds = |s: f64| time::Duration::seconds_f64(s);
    let (api, publisher, staging) = api_and_publisher(
        &fx,
        DeliverySettings {
            keep_leases: true,
            ..DeliverySettings::default()
        },
    );
    let deliver_new_claim = |device: &'static str| {
        let (api, publisher, fx) = (&api, &publisher, &fx);
        async move {
            fx.import(device).await;
            let owed = accepted(api, device).await;
            let report = publisher
                .deliver_streamed(&[owed], StdDuration::from_secs(10))
                .await
                .unwrap();
            assert_eq!((report.published, report.busy_vendors), (1, 0), "{device}: {report:?}");
        }
    };
    let taken = fx.clock.now();
    deliver_new_claim("keep-1").await;
    assert!(
        !fx.store
            .acquire_lease(LEASE, "the-schedule", taken + seconds(29.0), taken + seconds(59.0))
            .await
            .unwrap(),
        "kept after the delivery, not given back"
    );

    fx.clock.advance(seconds(3.0));
    deliver_new_claim("keep-2").await;
    // Not renewed by that delivery: free again 30 s after the first take.
    assert!(fx
        .store
        .acquire_lease(LEASE, "the-schedule", taken + seconds(30.5), taken + seconds(30.6))
        .await
        .unwrap());
    fx.store.release_lease(LEASE, "the-schedule").await.unwrap();

    fx.clock.advance(seconds(3.0));
    deliver_new_claim("keep-3").await;
    // Renewed by that one, 6 s after the first take: held until 36 s.
    assert!(!fx
        .store
        .acquire_lease(LEASE, "the-schedule", taken + seconds(35.0), taken + seconds(65.0))
        .await
        .unwrap());
    assert!(fx
        .store
        .acquire_lease(LEASE, "the-schedule", taken + seconds(36.5), taken + seconds(66.5))
        .await
        .unwrap());
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 3);
}

/// A stream delivery, once its batch is sent, carries on with the claims of its vendor that the
/// outbox holds due and it has not taken on (`service/pipeline.rs`): a burst keeps one delivery
/// busy instead of waiting for invocation after invocation. Not another vendor's claims, not a
/// claim waiting for its backoff; the followed claims' own stream records, later, send nothing.
async fn a_stream_delivery_carries_on_with_its_vendors_claims_that_became_due_meanwhile<S: TestStore>(fx: Fixture<S>) {
    let (api, publisher, staging) = api_and_publisher(&fx, DeliverySettings::default());
    let claim = |device: &'static str| accepted(&api, device);
    for device in ["follow-1", "follow-2", "follow-3", "follow-backoff"] {
        fx.import(device).await;
    }
    fx.service
        .import(
            &claim_shared::domain::registry::NewDevice {
                thing_name: claim_shared::domain::ids::ThingName::parse("follow-other-vendor").unwrap(),
                vendor: "nordic".into(),
                sku: None,
                code_hash: None,
                allow_thing_name: None,
                code_as_thing_name: None,
            },
            claim_shared::domain::history::Actor::Operator("factory-import".into()),
        )
        .await
        .unwrap();
    let first = claim("follow-1").await;
    let later = [claim("follow-2").await, claim("follow-3").await];
    let other_vendor = claim("follow-other-vendor").await;
    let waiting = claim("follow-backoff").await;
    api.record_publish(
        &waiting.claim_id,
        &claim_shared::service::PublishAttempt::Failed(PublishError::new("staging_unreachable", "test")),
    )
    .await
    .unwrap();

    let report = publisher
        .deliver_streamed(std::slice::from_ref(&first), StdDuration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((report.published, report.followed), (3, 2), "{report:?}");
    for claim in [&first, &later[0], &later[1]] {
        let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
        assert_eq!(stored.effective_state(fx.clock.now()), ClaimState::EndpointPublished);
    }
    for claim in [&other_vendor, &waiting] {
        let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
        assert_eq!(
            stored.effective_state(fx.clock.now()),
            ClaimState::Pending,
            "{}",
            claim.thing_name
        );
    }
    let late = publisher
        .deliver_streamed(&later, StdDuration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(late.published, 0, "{late:?}");
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 3);
}

/// The API publishes an `https` claim in its request without the vendor's lease, so the schedule's
/// drain must not send it too while that request is on it: a drain that runs between the request's
/// commit and its record leaves the claim to it (it used to publish it a second time). A claim
/// whose request ended without a record (the instance died) is the drain's once the request's
/// whole invocation is surely over ([`INLINE_GRACE`]), and it goes out once.
async fn a_drain_leaves_an_https_claim_to_the_request_publishing_it_until_that_request_is_surely_over<S: TestStore>(
    fx: Fixture<S>,
) {
    fx.import("inline-race-1").await;
    fx.import("inline-race-2").await;
    let https = || Arc::new(FixedCredentials::INLINE);
    let api_staging = slow_staging(StdDuration::from_millis(800));
    let api = delivering(&fx, https(), api_staging.clone(), DeliverySettings::default());
    let schedule_staging = slow_staging(StdDuration::ZERO);
    let schedule = delivering(&fx, https(), schedule_staging.clone(), DeliverySettings::default());

    // The drain runs while the request waits for the staging endpoint's answer.
    let deadline = Instant::now() + StdDuration::from_secs(3);
    let asked = request("alice", "inline-race-1", None);
    let (answered, drained) = tokio::join!(api.claim_and_publish(&asked, Some(deadline)), async {
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        schedule.drain(StdDuration::from_secs(10)).await.unwrap()
    });
    let ClaimOutcome::Created(claim) = answered.unwrap() else {
        panic!("accepted")
    };
    assert_eq!(
        (
            api_staging.publishes.load(Ordering::SeqCst),
            schedule_staging.publishes.load(Ordering::SeqCst)
        ),
        (1, 0),
        "one publish, the request's: {drained:?}"
    );
    assert_eq!((drained.published, drained.left_to_requests), (0, 1), "{drained:?}");
    assert_eq!(claim.state, ClaimState::EndpointPublished);

    // A request that committed its claim and never recorded a publish (its instance died).
    let ClaimOutcome::Created(orphan) = api.claim(&request("bob", "inline-race-2", None)).await.unwrap() else {
        panic!("accepted")
    };
    fx.clock.advance(INLINE_GRACE - time::Duration::seconds(1));
    let early = schedule.drain(StdDuration::from_secs(10)).await.unwrap();
    assert_eq!((early.published, early.left_to_requests), (0, 1), "{early:?}");
    fx.clock.advance(time::Duration::seconds(1));
    let late = schedule.drain(StdDuration::from_secs(10)).await.unwrap();
    assert_eq!((late.published, late.left_to_requests), (1, 0), "{late:?}");
    assert_eq!(schedule_staging.publishes.load(Ordering::SeqCst), 1);
    let stored = fx.store.claim(&orphan.claim_id).await.unwrap().unwrap();
    assert_eq!(stored.state, ClaimState::EndpointPublished);
}
