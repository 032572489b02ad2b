//! What lasts for a while: publisher leases and failed-attempt counts.

use claim_shared::domain::attempts::AttemptScope;
use claim_tests::{
    fixture::{Fixture, TestStore, T0},
    on_both_stores,
};
use time::Duration;

use super::{thing, user};

on_both_stores!(
    a_publisher_lease_has_one_holder_until_it_lapses,
    failed_attempts_are_counted_per_scope_and_window,
);

async fn a_publisher_lease_has_one_holder_until_it_lapses<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let now = T0;
    let until = now + Duration::seconds(30);
    assert!(store.acquire_lease("publisher#v", "a", now, until).await.unwrap());
    assert!(
        !store.acquire_lease("publisher#v", "b", now, until).await.unwrap(),
        "held by a"
    );
    assert!(
        store.acquire_lease("publisher#w", "b", now, until).await.unwrap(),
        "leases are per name"
    );
    assert!(
        store.acquire_lease("publisher#v", "a", now, until).await.unwrap(),
        "a renews"
    );

    // Only the holder's release counts.
    store.release_lease("publisher#v", "b").await.unwrap();
    assert!(!store.acquire_lease("publisher#v", "b", now, until).await.unwrap());
    // A lapsed lease can be taken over, and then the old holder's release changes nothing.
    let later = until + Duration::seconds(1);
    assert!(store
        .acquire_lease("publisher#v", "b", later, later + Duration::seconds(30))
        .await
        .unwrap());
    store.release_lease("publisher#v", "a").await.unwrap();
    assert!(!store
        .acquire_lease("publisher#v", "c", later, later + Duration::seconds(30))
        .await
        .unwrap());
    store.release_lease("publisher#v", "b").await.unwrap();
    assert!(store
        .acquire_lease("publisher#v", "c", later, later + Duration::seconds(30))
        .await
        .unwrap());
}

async fn failed_attempts_are_counted_per_scope_and_window<S: TestStore>(fx: Fixture<S>) {
    let store = &fx.store;
    let (window, next_window) = (T0, T0 + Duration::hours(1));
    let forget = T0 + Duration::hours(2);
    let alice = AttemptScope::User(user("alice"));
    let alice_on_device = AttemptScope::UserDevice(user("alice"), thing("dev-1"));
    assert_eq!(store.failed_attempts(&alice, window).await, Ok(0));
    for _ in 0..3 {
        store.count_failed_attempt(&alice, window, forget).await.unwrap();
    }
    store
        .count_failed_attempt(&alice_on_device, window, forget)
        .await
        .unwrap();
    assert_eq!(store.failed_attempts(&alice, window).await, Ok(3));
    assert_eq!(store.failed_attempts(&alice_on_device, window).await, Ok(1));
    assert_eq!(
        store.failed_attempts(&AttemptScope::User(user("bob")), window).await,
        Ok(0)
    );
    assert_eq!(store.failed_attempts(&alice, next_window).await, Ok(0), "a new window");
}
