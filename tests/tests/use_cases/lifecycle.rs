//! After the claim: the expiry sweep, releasing, re-importing, publish reports that no longer
//! apply, and the device history staying append-only through all of it.

use claim_shared::{
    domain::{
        claim::ClaimState,
        device::Holder,
        history::{Actor, HistoryEvent},
        registry::NewDevice,
    },
    ports::{CommitError, DeviceChange, StoreError},
    service::{
        ArrivalOutcome, ClaimError, ClaimOutcome, ImportOutcome, Progress, PublishAttempt, ReleaseError, RetryError,
    },
};
use claim_tests::{
    fixture::{Fixture, TestStore},
    on_both_stores,
};
use time::Duration;

use super::{assert_contiguous, request, thing, user, Steps};

on_both_stores!(
    the_expiry_sweep_records_overdue_claims_nobody_asked_about,
    only_the_owner_releases_and_the_device_becomes_claimable,
    history_is_append_only_across_every_operation,
    reimporting_never_touches_ownership,
    a_claim_that_was_not_sent_is_never_recorded_as_published,
    retries_of_one_claim_are_spaced_and_join_a_publish_already_due,
    a_disabled_device_is_out_of_service_for_its_holder_until_enabled,
);

async fn the_expiry_sweep_records_overdue_claims_nobody_asked_about<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-sweep").await;
    fx.import("dev-fresh").await;
    let overdue = fx.service.claim(&request("alice", "dev-sweep", None)).await.unwrap();
    fx.clock.advance(Duration::minutes(10));
    fx.service.claim(&request("bob", "dev-fresh", None)).await.unwrap();
    fx.clock.advance(Duration::minutes(6));

    let due = fx.store.overdue_claims(fx.service.now(), 100).await.unwrap();
    let due_ids: Vec<_> = due.iter().map(|c| c.claim_id.clone()).collect();
    assert_eq!(due_ids, [overdue.claim().claim_id.clone()]);

    let expired = fx.service.expire_if_overdue(&thing("dev-sweep")).await.unwrap();
    assert_eq!(expired, Some(overdue.claim().claim_id.clone()));
    // Running it again (a retried sweep) changes nothing.
    assert_eq!(fx.service.expire_if_overdue(&thing("dev-sweep")).await.unwrap(), None);
    let device = fx.store.device(&thing("dev-sweep")).await.unwrap().unwrap();
    assert_eq!(device.holder, Holder::Free);
    assert!(fx.store.overdue_claims(fx.service.now(), 100).await.unwrap().is_empty());
    let events = fx.events("dev-sweep").await;
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2],
        (HistoryEvent::Expired, Some(overdue.claim().claim_id.clone()))
    );
    let claim = fx.store.claim(&overdue.claim().claim_id).await.unwrap().unwrap();
    assert_eq!(claim.state, ClaimState::Expired);
    assert_eq!(claim.next_publish_at, None, "an expired claim owes no publish");
}

async fn only_the_owner_releases_and_the_device_becomes_claimable<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-rel").await;

    // A live reservation cannot be released (the endpoint may already be on its way).
    let pending = fx.service.claim(&request("alice", "dev-rel", None)).await.unwrap();
    assert_eq!(
        fx.service.release(&user("alice"), &thing("dev-rel")).await,
        Err(ReleaseError::MidClaim)
    );
    fx.service.mark_published(&pending.claim().claim_id).await.unwrap();
    // A duplicate report of the same publish changes nothing.
    assert_eq!(
        fx.service.mark_published(&pending.claim().claim_id).await,
        Ok(Progress::Ignored(ClaimState::EndpointPublished))
    );
    fx.service.mark_provisioned(&pending.claim().claim_id).await.unwrap();
    let owned = pending.claim().claim_id.clone();

    // Anyone else, and unknown devices, get the same answer.
    assert_eq!(
        fx.service.release(&user("mallory"), &thing("dev-rel")).await,
        Err(ReleaseError::DeviceNotFound)
    );
    assert_eq!(
        fx.service.release(&user("mallory"), &thing("no-such-device")).await,
        Err(ReleaseError::DeviceNotFound)
    );
    assert_eq!(
        fx.service.claim(&request("bob", "dev-rel", None)).await,
        Err(ClaimError::AlreadyClaimed)
    );

    let released = fx.service.release(&user("alice"), &thing("dev-rel")).await.unwrap();
    assert_eq!(released.state, ClaimState::Released);
    assert_eq!(
        fx.service.release(&user("alice"), &thing("dev-rel")).await,
        Err(ReleaseError::DeviceNotFound),
        "a second release finds nothing to release"
    );

    let bobs = fx.service.claim(&request("bob", "dev-rel", None)).await.unwrap();
    assert!(matches!(bobs, ClaimOutcome::Created(_)));
    assert_eq!(
        fx.events("dev-rel").await,
        [
            (HistoryEvent::Imported, None),
            (HistoryEvent::Claimed, Some(owned.clone())),
            (HistoryEvent::Provisioned, Some(owned.clone())),
            (HistoryEvent::Released, Some(owned.clone())),
            (HistoryEvent::Claimed, Some(bobs.claim().claim_id.clone())),
        ]
    );
    let release_entry = &fx.history("dev-rel").await[3];
    assert_eq!(release_entry.actor, Actor::User(user("alice")));
}

async fn history_is_append_only_across_every_operation<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-hist").await;
    let mut snapshots = vec![fx.history("dev-hist").await];

    fx.service.claim(&request("alice", "dev-hist", None)).await.unwrap();
    snapshots.push(fx.history("dev-hist").await);
    fx.clock.advance(Duration::minutes(16));
    fx.service.claim(&request("bob", "dev-hist", None)).await.unwrap();
    snapshots.push(fx.history("dev-hist").await);
    let bobs = fx.service.claim(&request("bob", "dev-hist", None)).await.unwrap();
    fx.service.mark_published(&bobs.claim().claim_id).await.unwrap();
    fx.service.mark_provisioned(&bobs.claim().claim_id).await.unwrap();
    snapshots.push(fx.history("dev-hist").await);
    fx.service.release(&user("bob"), &thing("dev-hist")).await.unwrap();
    snapshots.push(fx.history("dev-hist").await);
    fx.service
        .set_disabled(&thing("dev-hist"), true, "ops", None)
        .await
        .unwrap();
    snapshots.push(fx.history("dev-hist").await);

    for pair in snapshots.windows(2) {
        assert!(pair[1].len() > pair[0].len(), "every operation appended");
        assert_eq!(&pair[1][..pair[0].len()], &pair[0][..], "earlier entries never change");
    }
    let last = snapshots.last().unwrap();
    assert_contiguous(last);

    // A writer that tries to rewrite an existing entry is refused, and nothing of its change lands:
    // numbered as a rewrite, the store refuses it before writing…
    let device = fx.store.device(&thing("dev-hist")).await.unwrap().unwrap();
    let mut rewrite = DeviceChange::on(&device);
    let mut rewritten = last[0].clone();
    rewritten.event = HistoryEvent::Released;
    rewrite.history.push(rewritten.clone());
    rewrite.device.history_len += 1;
    assert!(matches!(
        fx.store.commit(rewrite).await,
        Err(CommitError::Store(StoreError::Corrupt(_)))
    ));
    // …and numbered as if the history were shorter than it is, DynamoDB's condition refuses it.
    let mut lying = DeviceChange::on(&device);
    lying.expected_history_len = 0;
    lying.device.history_len = 1;
    lying.history.push(rewritten);
    assert_eq!(fx.store.commit(lying).await, Err(CommitError::Conflict));
    assert_eq!(&fx.history("dev-hist").await, last);
    let after = fx.store.device(&thing("dev-hist")).await.unwrap().unwrap();
    assert_eq!(after, device, "the device did not change either");
}

async fn reimporting_never_touches_ownership<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-imp").await;
    let claim = fx.claim_and_own("alice", "dev-imp").await;
    let same = NewDevice {
        thing_name: thing("dev-imp"),
        vendor: "espressif".into(),
        sku: Some("KETTLE-2".into()),
        code_hash: None,
        allow_thing_name: None,
        code_as_thing_name: None,
    };
    let actor = Actor::Operator("factory-import".into());
    assert_eq!(
        fx.service.import(&same, actor.clone()).await,
        Ok(ImportOutcome::Unchanged)
    );
    let changed = NewDevice {
        sku: Some("KETTLE-3".into()),
        ..same
    };
    assert_eq!(fx.service.import(&changed, actor).await, Ok(ImportOutcome::Updated));
    let device = fx.store.device(&thing("dev-imp")).await.unwrap().unwrap();
    assert_eq!(device.sku.as_deref(), Some("KETTLE-3"));
    assert!(matches!(device.holder, Holder::Owned { claim_id, .. } if claim_id == claim));
}

async fn a_claim_that_was_not_sent_is_never_recorded_as_published<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-unsent").await;
    let claim = fx.service.claim(&request("alice", "dev-unsent", None)).await.unwrap();
    let claim_id = claim.claim().claim_id.clone();
    // Expired, then renewed by a retry: live again and owing a publish.
    fx.clock.advance(Duration::minutes(16));
    fx.service.retry(&user("alice"), &claim_id).await.unwrap();

    // A deliverer that decided on an older copy (expired) sends nothing and says so.
    let recorded = fx.service.record_publish(&claim_id, &PublishAttempt::NotSent).await;
    assert_eq!(recorded, Ok(Progress::Ignored(ClaimState::Pending)));
    let stored = fx.store.claim(&claim_id).await.unwrap().unwrap();
    assert_eq!(stored.state, ClaimState::Pending, "not published");
    assert!(stored.next_publish_at.is_some(), "still owes its publish");

    // Once it is really dead, the same report takes it out of the outbox.
    fx.clock.advance(Duration::minutes(16));
    fx.service
        .record_publish(&claim_id, &PublishAttempt::NotSent)
        .await
        .unwrap();
    let stored = fx.store.claim(&claim_id).await.unwrap().unwrap();
    assert_eq!(stored.state, ClaimState::Expired);
    assert_eq!(stored.next_publish_at, None);
}

async fn retries_of_one_claim_are_spaced_and_join_a_publish_already_due<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-flood").await;
    let claim = fx.service.claim(&request("alice", "dev-flood", None)).await.unwrap();
    let claim_id = claim.claim().claim_id.clone();
    // Not published yet (no delivery here): the retry joins the publish already due.
    let retried = fx.service.retry(&user("alice"), &claim_id).await.unwrap();
    assert_eq!(retried.next_publish_at, claim.claim().next_publish_at);
    fx.clock.advance(Duration::seconds(4));
    assert_eq!(
        fx.service.retry(&user("alice"), &claim_id).await,
        Err(RetryError::TooSoon {
            retry_after: Duration::seconds(6)
        })
    );
    // Someone else's retry is answered as before: no such claim, whatever its timing.
    assert_eq!(
        fx.service.retry(&user("mallory"), &claim_id).await,
        Err(RetryError::ClaimNotFound)
    );
    fx.clock.advance(Duration::seconds(6));
    fx.service.retry(&user("alice"), &claim_id).await.unwrap();
    // A renewal after expiry counts as a retry too.
    fx.clock.advance(Duration::minutes(16));
    let renewed = fx.service.retry(&user("alice"), &claim_id).await.unwrap();
    assert_eq!(renewed.state, ClaimState::Pending);
    assert!(matches!(
        fx.service.retry(&user("alice"), &claim_id).await,
        Err(RetryError::TooSoon { .. })
    ));
    // Nothing was written by the refused ones: the history shows the claim, one expiry, one renewal.
    let events: Vec<HistoryEvent> = fx.events("dev-flood").await.into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        events,
        [
            HistoryEvent::Imported,
            HistoryEvent::Claimed,
            HistoryEvent::Expired,
            HistoryEvent::Claimed
        ]
    );
}

async fn a_disabled_device_is_out_of_service_for_its_holder_until_enabled<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-live").await;
    fx.import("dev-owned").await;
    let live = fx.service.claim(&request("alice", "dev-live", None)).await.unwrap();
    let live_id = live.claim().claim_id.clone();
    let owned_id = fx.claim_and_own("alice", "dev-owned").await;
    for device in ["dev-live", "dev-owned"] {
        fx.service
            .set_disabled(&thing(device), true, "ops", Some("recall".into()))
            .await
            .unwrap();
    }

    // The live claim: its message is no longer owed, a retry is refused, the device arriving
    // completes nothing.
    let due = fx.store.due_publishes(fx.service.now(), 100).await.unwrap();
    assert!(due.iter().all(|claim| claim.claim_id != live_id), "left the outbox");
    assert_eq!(
        fx.service.retry(&user("alice"), &live_id).await,
        Err(RetryError::NotRetryable)
    );
    let arrival = fx
        .service
        .record_arrival(&thing("dev-live"), &Default::default())
        .await
        .unwrap();
    assert_eq!(arrival, ArrivalOutcome::Disabled);
    let device = fx.store.device(&thing("dev-live")).await.unwrap().unwrap();
    assert!(matches!(device.holder, Holder::Reserved { .. }), "not owned");

    // The owned device: ownership stays, but its owner neither sees nor releases it.
    assert_eq!(
        fx.service.device_of(&user("alice"), &thing("dev-owned")).await,
        Ok(None)
    );
    let listed = fx.service.devices_of(&user("alice"), None, 25).await.unwrap();
    assert!(listed.items.is_empty(), "{:?}", listed.items);
    assert_eq!(
        fx.service.release(&user("alice"), &thing("dev-owned")).await,
        Err(ReleaseError::DeviceNotFound)
    );
    assert_eq!(
        fx.service.claim(&request("bob", "dev-owned", None)).await,
        Err(ClaimError::DeviceNotFound)
    );

    // Enabled again: everything is back; the live claim can be retried.
    for device in ["dev-live", "dev-owned"] {
        fx.service
            .set_disabled(&thing(device), false, "ops", None)
            .await
            .unwrap();
    }
    let (_, claim) = fx
        .service
        .device_of(&user("alice"), &thing("dev-owned"))
        .await
        .unwrap()
        .expect("shown again");
    assert_eq!(claim.claim_id, owned_id);
    let retried = fx.service.retry(&user("alice"), &live_id).await.unwrap();
    assert!(retried.next_publish_at.is_some(), "owed again");
    fx.service.release(&user("alice"), &thing("dev-owned")).await.unwrap();
}
