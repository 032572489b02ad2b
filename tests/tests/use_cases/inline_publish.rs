//! The inline publish of an accepted claim (`service/outbox.rs`): the vendor's publisher lease is
//! taken in the claim's own commit and given back in the write that records the publish, so the
//! claim is published without being read back; with the lease held by another delivery, the claim
//! is still accepted, owed, and left to that delivery or the schedule. The staging endpoint is a
//! fake that confirms at once; the store is real.

use std::{sync::atomic::Ordering, time::Duration as StdDuration};

use claim_shared::{
    domain::{claim::ClaimState, history::HistoryEvent},
    service::Clock,
};
use claim_tests::{
    fixture::{Fixture, TestStore},
    on_both_stores,
};
use tokio::time::Instant;

use super::{deadlines::claim_with_staging, Steps};

on_both_stores!(
    an_accepted_claim_takes_the_vendor_lease_with_its_commit_and_gives_it_back_with_the_record,
    with_the_vendor_lease_held_elsewhere_the_claim_is_accepted_and_left_to_the_holder,
);

const LEASE: &str = "publisher#espressif";

async fn an_accepted_claim_takes_the_vendor_lease_with_its_commit_and_gives_it_back_with_the_record<S: TestStore>(
    fx: Fixture<S>,
) {
    fx.import("inline-1").await;
    let deadline = Instant::now() + StdDuration::from_secs(3);
    let (_, staging, claim) = claim_with_staging(&fx, "alice", "inline-1", StdDuration::ZERO, deadline).await;
    assert_eq!(claim.effective_state(fx.clock.now()), ClaimState::EndpointPublished);
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 1);
    // The answer is the claim as stored, though nothing was read back.
    let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(stored, claim);
    assert_eq!(
        fx.events("inline-1").await,
        [
            (HistoryEvent::Imported, None),
            (HistoryEvent::Claimed, Some(claim.claim_id.clone())),
            (HistoryEvent::EndpointPublished, Some(claim.claim_id.clone())),
        ]
    );
    // The lease was given back: the next delivery takes it at once.
    let now = fx.clock.now();
    assert!(fx
        .store
        .acquire_lease(LEASE, "the-next-delivery", now, now + time::Duration::seconds(30))
        .await
        .unwrap());
}

async fn with_the_vendor_lease_held_elsewhere_the_claim_is_accepted_and_left_to_the_holder<S: TestStore>(
    fx: Fixture<S>,
) {
    fx.import("inline-2").await;
    let now = fx.clock.now();
    let until = now + time::Duration::seconds(30);
    // The schedule is draining this vendor.
    assert!(fx.store.acquire_lease(LEASE, "the-schedule", now, until).await.unwrap());
    let deadline = Instant::now() + StdDuration::from_secs(3);
    let (service, staging, claim) = claim_with_staging(&fx, "alice", "inline-2", StdDuration::ZERO, deadline).await;
    assert_eq!(claim.effective_state(fx.clock.now()), ClaimState::Pending);
    assert!(claim.next_publish_at.is_some(), "owed in the outbox");
    assert_eq!(
        staging.publishes.load(Ordering::SeqCst),
        0,
        "the vendor's lease is not ours"
    );
    assert!(
        !fx.store.acquire_lease(LEASE, "someone-else", now, until).await.unwrap(),
        "the schedule still holds the lease"
    );
    // The holder delivers it.
    fx.store.release_lease(LEASE, "the-schedule").await.unwrap();
    let report = service.drain(StdDuration::from_secs(10)).await.unwrap();
    assert_eq!(report.published, 1, "{report:?}");
    let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(stored.effective_state(fx.clock.now()), ClaimState::EndpointPublished);
    assert_eq!(staging.publishes.load(Ordering::SeqCst), 1);
}
