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
    service::{ClaimOutcome, ClaimService, Clock, DeliverySettings},
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
