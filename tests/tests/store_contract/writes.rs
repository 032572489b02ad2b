//! Commits: all or nothing, only on the version the decision was made on, history append-only,
//! idempotency keys and label codes taken once.

use std::sync::Arc;

use claim_shared::{
    domain::{
        claim::ClaimState,
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::IdempotencyKey,
        label_code::CodeHash,
    },
    ports::{Absent, CommitError, DeviceChange, IdempotencyRecord, PageError, StoreError},
};
use claim_tests::{
    fixture::{Fixture, TestStore, T0},
    on_both_stores,
};
use time::Duration;

use super::{claim_in, creation, free_device, store_claims, thing, user};

on_both_stores!(
    a_device_is_created_once,
    a_change_decided_on_an_old_version_is_refused_whole,
    history_entries_are_never_rewritten,
    claims_change_only_from_the_version_they_were_read_at,
    a_claim_written_alone_lands_only_at_its_version_and_leaves_its_device_alone,
    an_idempotency_key_is_taken_once_until_it_expires,
    a_label_code_names_one_device_and_moves_with_it,
    a_change_lands_only_if_what_it_requires_absent_is_absent,
    of_concurrent_changes_on_one_version_exactly_one_lands,
    an_unreachable_store_fails_as_unavailable,
);

async fn a_device_is_created_once<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    assert_eq!(store.device(&thing("dev-1")).await, Ok(None));
    store.commit(creation(free_device("dev-1"))).await.unwrap();
    let stored = store.device(&thing("dev-1")).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.history_len), (1, 1));
    assert_eq!(stored.vendor, "espressif");
    let history = store.history(&thing("dev-1")).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].seq, history[0].event), (1, HistoryEvent::Imported));
    assert_eq!(
        store.commit(creation(free_device("dev-1"))).await,
        Err(CommitError::Conflict),
        "a second creation of the same device"
    );
}

async fn a_change_decided_on_an_old_version_is_refused_whole<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    store.commit(creation(free_device("dev-1"))).await.unwrap();
    let v1 = store.device(&thing("dev-1")).await.unwrap().unwrap();
    let mut first = DeviceChange::on(&v1);
    first.device.sku = Some("A".into());
    store.commit(first).await.unwrap();

    // Decided on version 1 as well: its claim, history entry and device change all stay out.
    let mut stale = DeviceChange::on(&v1);
    stale.device.disabled = true;
    let claim = claim_in("dev-1", "alice", T0, ClaimState::Pending);
    stale.create_claim(claim.clone());
    stale.record(NewHistoryEntry::new(T0, HistoryEvent::Claimed, Actor::System, None));
    assert_eq!(store.commit(stale).await, Err(CommitError::Conflict));
    let now = store.device(&thing("dev-1")).await.unwrap().unwrap();
    assert_eq!((now.version, now.sku.as_deref(), now.disabled), (2, Some("A"), false));
    assert_eq!(store.claim(&claim.claim_id).await, Ok(None));
    assert_eq!(store.history(&thing("dev-1")).await.unwrap().len(), 1);
    // A change of a device that does not exist is refused too.
    let mut ghost = DeviceChange::on(&free_device("ghost"));
    ghost.device.disabled = true;
    assert_eq!(store.commit(ghost).await, Err(CommitError::Conflict));
    assert_eq!(store.device(&thing("ghost")).await, Ok(None));
}

async fn history_entries_are_never_rewritten<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    store.commit(creation(free_device("dev-1"))).await.unwrap();
    let device = store.device(&thing("dev-1")).await.unwrap().unwrap();
    let history = store.history(&thing("dev-1")).await.unwrap();
    // Numbered as a rewrite of entry 1: refused before anything is written…
    let mut rewrite = DeviceChange::on(&device);
    let mut rewritten = history[0].clone();
    rewritten.event = HistoryEvent::Released;
    rewrite.history.push(rewritten.clone());
    rewrite.device.history_len += 1;
    assert!(matches!(
        store.commit(rewrite).await,
        Err(CommitError::Store(StoreError::Corrupt(_)))
    ));
    // …and numbered as if the history were shorter than it is: the store's condition refuses it.
    let mut lying = DeviceChange::on(&device);
    lying.expected_history_len = 0;
    lying.device.history_len = 1;
    lying.history.push(rewritten);
    assert_eq!(store.commit(lying).await, Err(CommitError::Conflict));
    assert_eq!(store.history(&thing("dev-1")).await.unwrap(), history);
    assert_eq!(store.device(&thing("dev-1")).await.unwrap().unwrap(), device);
}

async fn claims_change_only_from_the_version_they_were_read_at<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let claim = claim_in("dev-1", "alice", T0, ClaimState::Pending);
    store_claims(store, "dev-1", std::slice::from_ref(&claim)).await;
    assert_eq!(store.claim(&claim.claim_id).await, Ok(Some(claim.clone())));

    let device = store.device(&thing("dev-1")).await.unwrap().unwrap();
    let mut again = DeviceChange::on(&device);
    again.create_claim(claim.clone());
    assert_eq!(store.commit(again).await, Err(CommitError::Conflict), "the id exists");

    let mut stale = DeviceChange::on(&device);
    let mut published = claim.clone();
    published.state = ClaimState::EndpointPublished;
    stale.update_claim(claim.version + 1, published.clone());
    assert_eq!(
        store.commit(stale).await,
        Err(CommitError::Conflict),
        "not at that version"
    );

    let mut update = DeviceChange::on(&device);
    update.update_claim(claim.version, published.clone());
    store.commit(update).await.unwrap();
    let stored = store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.version),
        (ClaimState::EndpointPublished, claim.version + 1)
    );
}

async fn a_claim_written_alone_lands_only_at_its_version_and_leaves_its_device_alone<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let claim = claim_in("dev-1", "alice", T0, ClaimState::Pending);
    store_claims(store, "dev-1", std::slice::from_ref(&claim)).await;
    let device = store.device(&thing("dev-1")).await.unwrap().unwrap();
    let history = store.history(&thing("dev-1")).await.unwrap();
    assert_eq!(
        store.due_publishes(T0, 10).await.unwrap(),
        std::slice::from_ref(&claim),
        "owed"
    );

    let mut published = claim.clone();
    published.state = ClaimState::EndpointPublished;
    published.next_publish_at = None;
    published.version = claim.version + 1;
    assert_eq!(
        store.update_claim(&published, claim.version + 1).await,
        Err(CommitError::Conflict),
        "not at that version"
    );
    let unknown = claim_in("dev-1", "alice", T0, ClaimState::Pending);
    assert_eq!(
        store.update_claim(&unknown, unknown.version).await,
        Err(CommitError::Conflict),
        "no such claim: never created by a write of the claim alone"
    );
    assert_eq!(store.claim(&unknown.claim_id).await, Ok(None));
    assert_eq!(store.claim(&claim.claim_id).await, Ok(Some(claim.clone())));

    store.update_claim(&published, claim.version).await.unwrap();
    assert_eq!(store.claim(&claim.claim_id).await, Ok(Some(published.clone())));
    // Its indexes follow (it left the outbox); the device and its history are as they were.
    assert_eq!(store.due_publishes(T0, 10).await, Ok(Vec::new()));
    assert_eq!(store.device(&thing("dev-1")).await, Ok(Some(device)));
    assert_eq!(store.history(&thing("dev-1")).await, Ok(history));
    assert_eq!(
        store.update_claim(&published, claim.version).await,
        Err(CommitError::Conflict),
        "the same write again finds the claim moved on"
    );
}

async fn an_idempotency_key_is_taken_once_until_it_expires<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    store.commit(creation(free_device("dev-1"))).await.unwrap();
    let (alice, key) = (user("alice"), IdempotencyKey::parse("key-1").unwrap());
    let record_for = |claim_id, at| IdempotencyRecord {
        user: alice.clone(),
        key: key.clone(),
        claim_id,
        fingerprint: "claim:dev-1".into(),
        created_at: at,
        expires_at: at + Duration::hours(24),
    };
    let first = claim_in("dev-1", "alice", T0, ClaimState::Pending);
    let device = store.device(&thing("dev-1")).await.unwrap().unwrap();
    let mut change = DeviceChange::on(&device);
    change.create_claim(first.clone());
    change.idempotency = Some(record_for(first.claim_id.clone(), T0));
    store.commit(change).await.unwrap();
    let live = store
        .idempotency_record(&alice, &key, T0 + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(live.map(|r| r.claim_id), Some(first.claim_id.clone()));
    assert_eq!(
        store.idempotency_record(&user("bob"), &key, T0).await,
        Ok(None),
        "keys are per user"
    );

    // The same key again while it lives: refused, and its claim stays out.
    let device = store.device(&thing("dev-1")).await.unwrap().unwrap();
    let second = claim_in("dev-1", "alice", T0, ClaimState::Pending);
    let mut change = DeviceChange::on(&device);
    change.create_claim(second.clone());
    change.idempotency = Some(record_for(second.claim_id.clone(), T0 + Duration::hours(1)));
    assert_eq!(store.commit(change).await, Err(CommitError::IdempotencyKeyUsed));
    assert_eq!(store.claim(&second.claim_id).await, Ok(None));

    // Expired: read as absent, and taken over by the next request.
    let later = T0 + Duration::hours(24);
    assert_eq!(store.idempotency_record(&alice, &key, later).await, Ok(None));
    let mut change = DeviceChange::on(&device);
    change.create_claim(second.clone());
    change.idempotency = Some(record_for(second.claim_id.clone(), later));
    store.commit(change).await.unwrap();
    let taken = store.idempotency_record(&alice, &key, later).await.unwrap();
    assert_eq!(taken.map(|r| r.claim_id), Some(second.claim_id));
}

async fn a_label_code_names_one_device_and_moves_with_it<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let (x, y) = (
        CodeHash::parse(&"0a".repeat(32)).unwrap(),
        CodeHash::parse(&"0b".repeat(32)).unwrap(),
    );
    let mut a = free_device("dev-a");
    a.code_hash = Some(x.clone());
    store.commit(creation(a)).await.unwrap();
    assert_eq!(store.thing_by_code(&x).await, Ok(Some(thing("dev-a"))));

    let mut b = free_device("dev-b");
    b.code_hash = Some(x.clone());
    assert_eq!(store.commit(creation(b.clone())).await, Err(CommitError::CodeTaken));
    assert_eq!(
        store.device(&thing("dev-b")).await,
        Ok(None),
        "nothing of it was written"
    );

    let a = store.device(&thing("dev-a")).await.unwrap().unwrap();
    let mut moved = DeviceChange::on(&a);
    moved.device.code_hash = Some(y.clone());
    store.commit(moved).await.unwrap();
    assert_eq!(store.thing_by_code(&x).await, Ok(None));
    assert_eq!(store.thing_by_code(&y).await, Ok(Some(thing("dev-a"))));
    store.commit(creation(b)).await.unwrap();
    assert_eq!(store.thing_by_code(&x).await, Ok(Some(thing("dev-b"))));
}

async fn of_concurrent_changes_on_one_version_exactly_one_lands<S: TestStore>(fx: Fixture<S>) {
    let store = Arc::new(fx.store.clone());
    store.commit(creation(free_device("dev-1"))).await.unwrap();
    let device = store.device(&thing("dev-1")).await.unwrap().unwrap();
    let racers = (0..10).map(|i| {
        let (store, device) = (Arc::clone(&store), device.clone());
        tokio::spawn(async move {
            let mut change = DeviceChange::on(&device);
            change.device.sku = Some(format!("racer-{i}"));
            change.record(NewHistoryEntry::new(T0, HistoryEvent::Imported, Actor::System, None));
            store.commit(change).await
        })
    });
    let results: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(CommitError::Conflict))));
    let after = store.device(&thing("dev-1")).await.unwrap().unwrap();
    assert_eq!((after.version, after.history_len), (2, 2));
    assert_eq!(store.history(&thing("dev-1")).await.unwrap().len(), 2);
}

async fn an_unreachable_store_fails_as_unavailable<S: TestStore>(_fx: Fixture<S>) {
    let store = S::unreachable().await;
    let unavailable = |err: &StoreError| matches!(err, StoreError::Unavailable(_));
    assert!(store.device(&thing("dev-1")).await.is_err_and(|e| unavailable(&e)));
    assert!(matches!(
        store.commit(creation(free_device("dev-1"))).await,
        Err(CommitError::Store(StoreError::Unavailable(_)))
    ));
    assert!(matches!(
        store.devices_held_by(&user("alice"), None, 10).await,
        Err(PageError::Store(StoreError::Unavailable(_)))
    ));
    assert!(store.due_publishes(T0, 10).await.is_err_and(|e| unavailable(&e)));
}

async fn a_change_lands_only_if_what_it_requires_absent_is_absent<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let code = CodeHash::parse(&"0c".repeat(32)).unwrap();
    let mut coded = free_device("dev-coded");
    coded.code_hash = Some(code.clone());
    store.commit(creation(coded)).await.unwrap();

    for absent in [Absent::Device(thing("dev-coded")), Absent::Code(code.clone())] {
        let mut change = creation(free_device("dev-new"));
        change.must_be_absent = vec![Absent::Device(thing("nobody")), absent.clone()];
        assert_eq!(store.commit(change).await, Err(CommitError::CodeTaken), "{absent:?}");
        assert_eq!(
            store.device(&thing("dev-new")).await,
            Ok(None),
            "nothing of it was written"
        );
    }
    let mut change = creation(free_device("dev-new"));
    change.must_be_absent = vec![
        Absent::Device(thing("nobody")),
        Absent::Code(CodeHash::parse(&"0d".repeat(32)).unwrap()),
    ];
    store.commit(change).await.unwrap();
    assert!(store.device(&thing("dev-new")).await.unwrap().is_some());
}
