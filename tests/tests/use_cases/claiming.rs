//! Claiming a device: races, repeats and idempotency keys, deadlines, disabled devices, the
//! failed-attempt limits, and what a claim decision logs.

use std::sync::Arc;

use claim_shared::{
    domain::{
        claim::ClaimState,
        device::Holder,
        history::{Actor, HistoryEvent},
    },
    service::{ClaimError, ClaimOutcome, ClaimSettings, Progress},
};
use claim_tests::{
    fixture::{Fixture, TestStore},
    on_both_stores,
};
use time::Duration;

use super::{assert_contiguous, request, thing, user, CapturedLogs, Steps};

on_both_stores!(
    twenty_users_racing_for_one_device_leave_exactly_one_reservation,
    the_same_user_claiming_again_gets_the_same_claim,
    one_idempotency_key_sent_concurrently_makes_one_claim,
    an_idempotency_key_cannot_be_reused_for_another_device,
    a_reservation_past_its_deadline_reads_expired_and_frees_the_device,
    disabled_devices_cannot_be_claimed_and_look_unknown,
    claim_decisions_are_logged_with_their_fields_but_never_the_full_code,
    failed_attempts_are_limited_per_user_and_per_user_on_a_device_without_locking_out_others,
    probing_which_devices_are_held_is_bounded_like_guessing,
);

async fn twenty_users_racing_for_one_device_leave_exactly_one_reservation<S: TestStore>(fx: Fixture<S>) {
    fx.import("race-1").await;

    let attempts = (0..20).map(|i| {
        let service = Arc::clone(&fx.service);
        tokio::spawn(async move { (i, service.claim(&request(&format!("user-{i}"), "race-1", None)).await) })
    });
    let results = futures::future::join_all(attempts).await;

    let mut winners = Vec::new();
    let mut refused = 0;
    for joined in results {
        let (i, result) = joined.expect("task");
        match result {
            Ok(ClaimOutcome::Created(claim)) => winners.push((i, claim)),
            Err(ClaimError::AlreadyClaimed) => refused += 1,
            other => panic!("user-{i}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one reservation wins");
    assert_eq!(refused, 19, "everyone else sees already_claimed");
    let (winner, claim) = &winners[0];

    // The store is consistent: one holder, one claim, and the history tells exactly that.
    let device = fx.store.device(&thing("race-1")).await.unwrap().unwrap();
    assert!(matches!(
        &device.holder,
        Holder::Reserved { claim_id, user: u, .. } if claim_id == &claim.claim_id && u == &user(&format!("user-{winner}"))
    ));
    assert_eq!(fx.probe.claims_of_device("race-1").await, 1);
    let history = fx.history("race-1").await;
    assert_contiguous(&history);
    assert_eq!(
        fx.events("race-1").await,
        [
            (HistoryEvent::Imported, None),
            (HistoryEvent::Claimed, Some(claim.claim_id.clone()))
        ]
    );
    assert_eq!(device.history_len, 2);
}

async fn the_same_user_claiming_again_gets_the_same_claim<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-again").await;

    let first = fx
        .service
        .claim(&request("alice", "dev-again", None))
        .await
        .expect("first");
    let ClaimOutcome::Created(first) = first else {
        panic!("first claim must be new")
    };

    // Without a key, with a new key, and with the same key twice: always the first claim.
    for key in [None, Some("key-1"), Some("key-1"), Some("key-2")] {
        let again = fx
            .service
            .claim(&request("alice", "dev-again", key))
            .await
            .expect("again");
        assert_eq!(again, ClaimOutcome::Existing(first.clone()), "key {key:?}");
    }
    assert_eq!(fx.probe.claims_of_device("dev-again").await, 1);
    assert_eq!(fx.history("dev-again").await.len(), 2);
}

async fn one_idempotency_key_sent_concurrently_makes_one_claim<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-idem").await;

    let attempts = (0..10).map(|_| {
        let service = Arc::clone(&fx.service);
        tokio::spawn(async move { service.claim(&request("bob", "dev-idem", Some("retry-me"))).await })
    });
    let outcomes: Vec<ClaimOutcome> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|joined| joined.expect("task").expect("claim"))
        .collect();
    // A replay answers like the first request (202); a request that raced past the key check finds
    // the caller already holding the device (200). Either way: the same claim.
    assert!(outcomes.iter().any(|o| matches!(o, ClaimOutcome::Created(_))));
    let ids: std::collections::HashSet<_> = outcomes.iter().map(|o| o.claim().claim_id.clone()).collect();
    assert_eq!(ids.len(), 1, "every response names the same claim");
    assert_eq!(fx.probe.claims_of_device("dev-idem").await, 1);
    assert_eq!(fx.probe.idempotency_records().await, 1);
}

async fn an_idempotency_key_cannot_be_reused_for_another_device<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-k1").await;
    fx.import("dev-k2").await;
    fx.service
        .claim(&request("carol", "dev-k1", Some("same-key")))
        .await
        .expect("first");
    let reused = fx.service.claim(&request("carol", "dev-k2", Some("same-key"))).await;
    assert_eq!(reused, Err(ClaimError::IdempotencyKeyReused));
    assert_eq!(fx.probe.claims_of_device("dev-k2").await, 0, "nothing was written");
    assert_eq!(fx.history("dev-k2").await.len(), 1);

    // Once the key's window has passed it is free again.
    fx.clock.advance(Duration::hours(25));
    let later = fx.service.claim(&request("carol", "dev-k2", Some("same-key"))).await;
    assert!(matches!(later, Ok(ClaimOutcome::Created(_))), "{later:?}");
}

async fn a_reservation_past_its_deadline_reads_expired_and_frees_the_device<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-exp").await;
    let ClaimOutcome::Created(first) = fx.service.claim(&request("alice", "dev-exp", None)).await.unwrap() else {
        panic!("new claim expected");
    };
    assert_eq!(
        fx.service.claim(&request("bob", "dev-exp", None)).await,
        Err(ClaimError::AlreadyClaimed)
    );

    fx.clock.advance(Duration::minutes(15));

    // Reads are right without any sweep having run.
    let read = fx
        .service
        .claim_of(&user("alice"), &first.claim_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.effective_state(fx.service.now()), ClaimState::Expired);
    let device = fx.store.device(&thing("dev-exp")).await.unwrap().unwrap();
    assert_eq!(device.held_by(fx.service.now()), None);

    // Another user can claim; the old claim is recorded as expired in the same change.
    let ClaimOutcome::Created(second) = fx.service.claim(&request("bob", "dev-exp", None)).await.unwrap() else {
        panic!("bob gets a new claim");
    };
    let old = fx.store.claim(&first.claim_id).await.unwrap().unwrap();
    assert_eq!(old.state, ClaimState::Expired);
    assert_eq!(old.history.last().map(|h| h.at), Some(first.expires_at));
    let history = fx.history("dev-exp").await;
    assert_contiguous(&history);
    assert_eq!(
        fx.events("dev-exp").await,
        [
            (HistoryEvent::Imported, None),
            (HistoryEvent::Claimed, Some(first.claim_id.clone())),
            (HistoryEvent::Expired, Some(first.claim_id.clone())),
            (HistoryEvent::Claimed, Some(second.claim_id.clone())),
        ]
    );
    // A late "published" report for the superseded claim changes nothing.
    assert_eq!(
        fx.service.mark_published(&first.claim_id).await,
        Ok(Progress::Ignored(ClaimState::Expired))
    );
    assert_eq!(fx.history("dev-exp").await.len(), 4);
}

async fn disabled_devices_cannot_be_claimed_and_look_unknown<S: TestStore>(fx: Fixture<S>) {
    fx.import("dev-off").await;
    fx.service
        .set_disabled(&thing("dev-off"), true, "ops@oem", Some("returned to factory".into()))
        .await
        .unwrap();
    assert_eq!(
        fx.service.claim(&request("alice", "dev-off", None)).await,
        Err(ClaimError::DeviceNotFound)
    );
    assert_eq!(
        fx.service.claim(&request("alice", "never-imported", None)).await,
        Err(ClaimError::DeviceNotFound),
        "indistinguishable from an unknown device"
    );
    assert_eq!(fx.probe.claims_of_device("dev-off").await, 0);

    fx.service
        .set_disabled(&thing("dev-off"), false, "ops@oem", None)
        .await
        .unwrap();
    assert!(matches!(
        fx.service.claim(&request("alice", "dev-off", None)).await,
        Ok(ClaimOutcome::Created(_))
    ));
    let history = fx.history("dev-off").await;
    let disabled = &history[1];
    assert_eq!(disabled.event, HistoryEvent::Disabled);
    assert_eq!(disabled.actor, Actor::Operator("ops@oem".into()));
    assert_eq!(disabled.reason.as_deref(), Some("returned to factory"));
    assert_eq!(history[2].event, HistoryEvent::Enabled);
}

async fn claim_decisions_are_logged_with_their_fields_but_never_the_full_code<S: TestStore>(fx: Fixture<S>) {
    let code = "a1b2c3d4-e5f6-7890-abcd-ef0123456789";
    fx.import(code).await;

    let logs = CapturedLogs::new();
    let claim = logs
        .during(async {
            let claim = fx.service.claim(&request("alice", code, None)).await.unwrap();
            fx.service.claim(&request("bob", code, None)).await.unwrap_err();
            claim
        })
        .await;
    let decisions = logs.claim_decisions();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0]["outcome"], "created");
    assert_eq!(decisions[0]["claim_id"], claim.claim().claim_id.as_str());
    assert!(decisions[0]["latency_ms"].is_u64());
    assert_eq!(decisions[1]["outcome"], "already_claimed");
    assert_eq!(decisions[1]["thing_name"], "a1b2…(36 chars)");
    assert!(
        !logs.text().contains(code),
        "the full label code never reaches the logs"
    );
}

async fn failed_attempts_are_limited_per_user_and_per_user_on_a_device_without_locking_out_others<S: TestStore>(
    fx: Fixture<S>,
) {
    let limits = ClaimSettings::default().attempt_limits;
    for device in ["limit-1", "limit-2", "limit-3"] {
        fx.import(device).await;
    }
    fx.service
        .claim(&request("owner", "limit-1", None))
        .await
        .expect("the owner claims");
    fx.clock.advance(Duration::minutes(1));

    // An app that keeps retrying a device somebody else holds: refused on that device…
    for _ in 0..limits.per_user_device {
        let answer = fx.service.claim(&request("impatient", "limit-1", None)).await;
        assert_eq!(answer, Err(ClaimError::AlreadyClaimed));
    }
    let answer = fx.service.claim(&request("impatient", "limit-1", None)).await;
    assert_eq!(
        answer,
        Err(ClaimError::RateLimited {
            retry_after: limits.window - Duration::minutes(1)
        }),
        "until the window ends"
    );
    let on_device = fx.inspect_for("limit-1", "impatient").await;
    assert_eq!(on_device.reason, "reserved", "the device's own reason comes first");
    let attempts = on_device.attempts.expect("attempts of the user");
    assert_eq!(attempts.failed_on_device, limits.per_user_device);
    assert_eq!(attempts.retry_after, Some(limits.window - Duration::minutes(1)));

    // …but not on their other devices, and the device's owner is not affected at all.
    let other = fx.service.claim(&request("impatient", "limit-2", Some("k-2"))).await;
    let Ok(ClaimOutcome::Created(other)) = other else {
        panic!("expected a new claim, got {other:?}")
    };
    let owner = fx.service.claim(&request("owner", "limit-1", None)).await;
    assert!(matches!(owner, Ok(ClaimOutcome::Existing(_))), "{owner:?}");

    // Guessing codes: every unknown code counts against the user, whatever the code, and so did
    // the held device's 409s, up to that device's own limit.
    let attempts = fx.inspect_for("limit-3", "impatient").await.attempts.expect("attempts");
    assert_eq!(attempts.failed_by_user, limits.per_user_device);
    for i in 0..limits.per_user - limits.per_user_device {
        let guess = format!("guess-{i}");
        let answer = fx.service.claim(&request("impatient", &guess, None)).await;
        assert_eq!(answer, Err(ClaimError::DeviceNotFound), "{guess}");
    }
    let free = thing("limit-3");
    let refused = fx.service.claim(&request("impatient", "limit-3", None)).await;
    assert!(matches!(refused, Err(ClaimError::RateLimited { .. })), "{refused:?}");
    let inspected = fx.inspect_for("limit-3", "impatient").await;
    assert_eq!((inspected.claimable_now, inspected.reason), (false, "rate_limited"));
    assert_eq!(inspected.attempts.expect("attempts").failed_by_user, limits.per_user);
    // A repeat of the request that succeeded still gets its first answer; the same key with another
    // code gets 429, not the 400 that would tell a guess apart.
    let repeat = fx.service.claim(&request("impatient", "limit-2", Some("k-2"))).await;
    assert_eq!(repeat, Ok(ClaimOutcome::Created(other.clone())));
    let reused = fx.service.claim(&request("impatient", "limit-3", Some("k-2"))).await;
    assert!(matches!(reused, Err(ClaimError::RateLimited { .. })), "{reused:?}");
    let for_others = fx.inspect_for("limit-3", "someone").await;
    assert_eq!((for_others.claimable_now, for_others.reason), (true, "claimable"));
    assert_eq!(fx.service.inspect(&free).await.expect("inspect").reason, "claimable");
    // A refusal writes nothing: the free device's history is still only its import.
    assert_eq!(fx.events("limit-3").await, vec![(HistoryEvent::Imported, None)]);
    // Counts are kept for the user and for the held device only: the guesses (shaped like
    // ThingNames, so possibly mistyped label codes) are stored nowhere.
    assert_eq!(
        fx.probe.attempt_scopes().await,
        ["DEVICE#limit-1#USER#impatient", "USER#impatient"]
    );

    // The next window starts from zero.
    fx.clock.advance(limits.window);
    let later = fx.service.claim(&request("impatient", "limit-3", None)).await;
    assert!(matches!(later, Ok(ClaimOutcome::Created(_))), "{later:?}");
}

async fn probing_which_devices_are_held_is_bounded_like_guessing<S: TestStore>(fx: Fixture<S>) {
    let limits = ClaimSettings::default().attempt_limits;
    let held = limits.per_user + 5;
    for i in 0..held {
        let device = format!("held-{i}");
        fx.import(&device).await;
        fx.service
            .claim(&request("owner", &device, None))
            .await
            .expect("the owner claims");
    }
    // A stranger walks the held devices: 409 ("ask the owner") until the user's budget is spent,
    // then 429 for everything, held or not.
    let mut answers = Vec::new();
    for i in 0..held {
        answers.push(fx.service.claim(&request("prober", &format!("held-{i}"), None)).await);
    }
    let conflicts = answers
        .iter()
        .filter(|a| **a == Err(ClaimError::AlreadyClaimed))
        .count();
    let limited = answers
        .iter()
        .filter(|a| matches!(a, Err(ClaimError::RateLimited { .. })))
        .count();
    assert_eq!(
        (conflicts, limited),
        (limits.per_user as usize, held as usize - limits.per_user as usize)
    );
    fx.import("free-1").await;
    let free = fx.service.claim(&request("prober", "free-1", None)).await;
    assert!(matches!(free, Err(ClaimError::RateLimited { .. })), "{free:?}");
    // The owner is not affected.
    let owner = fx.service.claim(&request("owner", "held-0", None)).await;
    assert!(matches!(owner, Ok(ClaimOutcome::Existing(_))), "{owner:?}");
}
