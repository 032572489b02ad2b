//! Queries: a user's devices page by page, the outbox, overdue claims, and claims by state and
//! deadline.

use claim_shared::{
    domain::{claim::ClaimState, device::Holder},
    ports::{DeviceChange, PageError},
};
use claim_tests::{
    fixture::{Fixture, TestStore, T0},
    on_both_stores,
};
use time::Duration;

use super::{claim_in, creation, free_device, ids, store_claims, thing, user};

on_both_stores!(
    a_users_devices_page_through_their_own_devices_only,
    the_outbox_lists_due_claims_earliest_or_latest_first,
    overdue_claims_are_live_claims_past_their_deadline,
    claims_in_a_state_are_found_by_deadline_in_a_half_open_range,
);

async fn a_users_devices_page_through_their_own_devices_only<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let held_by = |who: &str, name: &str| {
        let mut device = free_device(name);
        let claim = claim_in(name, who, T0, ClaimState::Provisioned);
        device.holder = Holder::Owned {
            claim_id: claim.claim_id,
            user: user(who),
            since: T0,
        };
        device
    };
    for i in 0..5 {
        store
            .commit(creation(held_by("dana", &format!("dev-list-{i}"))))
            .await
            .unwrap();
    }
    store.commit(creation(held_by("erin", "dev-other"))).await.unwrap();
    store.commit(creation(free_device("dev-free"))).await.unwrap();

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store.devices_held_by(&user("dana"), token.as_deref(), 2).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|d| d.thing_name.to_string()));
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, (0..5).map(|i| format!("dev-list-{i}")).collect::<Vec<_>>());

    // Erin cannot use Dana's page token, and nobody can use a made-up one.
    let dana_page = store.devices_held_by(&user("dana"), None, 2).await.unwrap();
    let token = dana_page.next_token.expect("more pages");
    assert_eq!(
        store.devices_held_by(&user("erin"), Some(&token), 2).await,
        Err(PageError::InvalidToken)
    );
    assert_eq!(
        store.devices_held_by(&user("dana"), Some("not-a-token!"), 2).await,
        Err(PageError::InvalidToken)
    );

    // Released: no longer listed.
    let device = store.device(&thing("dev-other")).await.unwrap().unwrap();
    let mut released = DeviceChange::on(&device);
    released.device.holder = Holder::Free;
    store.commit(released).await.unwrap();
    let erins = store.devices_held_by(&user("erin"), None, 10).await.unwrap();
    assert!(erins.items.is_empty(), "{:?}", erins.items);
}

async fn the_outbox_lists_due_claims_earliest_or_latest_first<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let mut claims = Vec::new();
    for seconds in [20, 0, 10] {
        let mut claim = claim_in("dev-1", "alice", T0, ClaimState::Pending);
        claim.next_publish_at = Some(T0 + Duration::seconds(seconds));
        claims.push(claim);
    }
    let published = claim_in("dev-1", "alice", T0, ClaimState::EndpointPublished);
    claims.push(published);
    store_claims(store, "dev-1", &claims).await;

    let due = store.due_publishes(T0 + Duration::seconds(10), 100).await.unwrap();
    assert_eq!(ids(&due), [claims[1].claim_id.clone(), claims[2].claim_id.clone()]);
    let first = store.due_publishes(T0 + Duration::seconds(60), 1).await.unwrap();
    assert_eq!(ids(&first), [claims[1].claim_id.clone()]);
    assert!(store
        .due_publishes(T0 - Duration::seconds(1), 100)
        .await
        .unwrap()
        .is_empty());
    // The latest due first (what a running delivery has not seen yet).
    let newest = store
        .newest_due_publishes(T0 + Duration::seconds(10), 100)
        .await
        .unwrap();
    assert_eq!(ids(&newest), [claims[2].claim_id.clone(), claims[1].claim_id.clone()]);
    let newest = store.newest_due_publishes(T0 + Duration::seconds(60), 1).await.unwrap();
    assert_eq!(ids(&newest), [claims[0].claim_id.clone()]);
}

async fn overdue_claims_are_live_claims_past_their_deadline<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    // Deadlines: pending at +15 min, published at +5 min, provisioned (not live) at +1 min.
    let pending = claim_in("dev-1", "alice", T0, ClaimState::Pending);
    let published = claim_in(
        "dev-1",
        "bob",
        T0 - Duration::minutes(10),
        ClaimState::EndpointPublished,
    );
    let provisioned = claim_in("dev-1", "carol", T0 - Duration::minutes(14), ClaimState::Provisioned);
    store_claims(store, "dev-1", &[pending.clone(), published.clone(), provisioned]).await;

    let overdue = store.overdue_claims(T0 + Duration::minutes(16), 100).await.unwrap();
    assert_eq!(ids(&overdue), [published.claim_id.clone(), pending.claim_id.clone()]);
    let at_deadline = store.overdue_claims(pending.expires_at, 100).await.unwrap();
    assert_eq!(
        ids(&at_deadline),
        std::slice::from_ref(&published.claim_id),
        "strictly before"
    );
    let oldest = store.overdue_claims(T0 + Duration::minutes(16), 1).await.unwrap();
    assert_eq!(ids(&oldest), [published.claim_id]);
}

async fn claims_in_a_state_are_found_by_deadline_in_a_half_open_range<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let at = |minutes: i64| T0 + Duration::minutes(minutes);
    let claims: Vec<_> = [0, 10, 20]
        .into_iter()
        .map(|m| claim_in("dev-1", "alice", at(m), ClaimState::Expired))
        .collect();
    let other_state = claim_in("dev-1", "alice", at(10), ClaimState::Released);
    let mut all = claims.clone();
    all.push(other_state);
    store_claims(store, "dev-1", &all).await;

    // Deadlines are start + 15 min: 15, 25, 35.
    let found = store
        .claims_in_state(ClaimState::Expired, at(15), at(35), 100)
        .await
        .unwrap();
    assert_eq!(ids(&found), ids(&claims[..2]), "from included, to excluded");
    let limited = store
        .claims_in_state(ClaimState::Expired, at(0), at(60), 2)
        .await
        .unwrap();
    assert_eq!(ids(&limited), ids(&claims[..2]), "earliest deadline first");
    let released = store
        .claims_in_state(ClaimState::Released, at(0), at(60), 100)
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
}
