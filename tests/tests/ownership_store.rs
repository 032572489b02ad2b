//! Ownership rules end to end on the real DynamoDB engine (DynamoDB Local, started by
//! `scripts/dev.sh`). Each test works in a table of its own, so they run in parallel.

// A failed expectation in a test is the test failing: unwrap/expect are the right tool here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, sync::Arc};

use aws_sdk_dynamodb::{types::AttributeValue, Client};
use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    domain::{
        claim::ClaimState,
        device::Holder,
        endpoints::EndpointPlan,
        history::{Actor, HistoryEntry, HistoryEvent},
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
    },
    ports::{CommitError, DeviceChange, OwnershipStore, StoreError},
    service::{
        admin::Inspection, ArrivalOutcome, ClaimError, ClaimOutcome, ClaimRequest, ClaimService, ClaimSettings,
        ImportOutcome, NewDevice, Progress, PublishAttempt, ReleaseError,
    },
};
use claim_tests::{dynamodb_at, fresh_table, local_dynamodb, ManualClock};
use time::{macros::datetime, Duration};

const ENDPOINT: &str = "oem-ats.iot.eu-west-1.amazonaws.com";
type Service = ClaimService<DynamoOwnershipStore, ManualClock>;

struct Fixture {
    client: Client,
    table: String,
    clock: ManualClock,
    service: Arc<Service>,
}

async fn fixture() -> Fixture {
    let client = local_dynamodb().await;
    let table = fresh_table(&client).await;
    let clock = ManualClock::at(datetime!(2026-03-01 12:00 UTC));
    let service = Arc::new(ClaimService::new(
        DynamoOwnershipStore::new(client.clone(), &table),
        clock.clone(),
        ClaimSettings::default(),
    ));
    Fixture {
        client,
        table,
        clock,
        service,
    }
}

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
        endpoints: std::sync::Arc::new(EndpointPlan::single(ENDPOINT)),
        region_hint: None,
        idempotency_key: key.map(|k| IdempotencyKey::parse(k).expect("valid key")),
    }
}

impl Fixture {
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
                },
                Actor::Operator("factory-import".into()),
            )
            .await
            .expect("import");
        assert_eq!(outcome, ImportOutcome::Created);
    }

    /// The inspection of `device` for the user `who` (as support asks it).
    async fn inspect_for(&self, device: &str, who: &str) -> Inspection {
        self.service
            .inspect_for(&thing(device), Some(&user(who)))
            .await
            .expect("inspect")
    }

    async fn history(&self, device: &str) -> Vec<HistoryEntry> {
        self.service.store().history(&thing(device)).await.expect("history")
    }

    async fn events(&self, device: &str) -> Vec<(HistoryEvent, Option<ClaimId>)> {
        self.history(device)
            .await
            .into_iter()
            .map(|entry| (entry.event, entry.claim_id))
            .collect()
    }

    /// Every stored item of one entity kind (a scan: test-only, the product never scans).
    async fn items(&self, entity: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.client
            .scan()
            .table_name(&self.table)
            .filter_expression("entity = :e")
            .expression_attribute_values(":e", AttributeValue::S(entity.into()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("scan")
    }

    async fn claims_of_device(&self, device: &str) -> usize {
        self.items("claim")
            .await
            .iter()
            .filter(|item| item.get("thing_name") == Some(&AttributeValue::S(device.into())))
            .count()
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

/// History entries are numbered 1..=n without gaps.
fn assert_contiguous(history: &[HistoryEntry]) {
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=history.len() as u64).collect();
    assert_eq!(seqs, expected, "history numbering has a gap or a duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_users_racing_for_one_device_leave_exactly_one_reservation() {
    let fx = fixture().await;
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
    let device = fx.service.store().device(&thing("race-1")).await.unwrap().unwrap();
    assert!(matches!(
        &device.holder,
        Holder::Reserved { claim_id, user: u, .. } if claim_id == &claim.claim_id && u == &user(&format!("user-{winner}"))
    ));
    assert_eq!(fx.claims_of_device("race-1").await, 1);
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

#[tokio::test]
async fn the_same_user_claiming_again_gets_the_same_claim() {
    let fx = fixture().await;
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
    assert_eq!(fx.claims_of_device("dev-again").await, 1);
    assert_eq!(fx.history("dev-again").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_concurrently_makes_one_claim() {
    let fx = fixture().await;
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
    assert_eq!(fx.claims_of_device("dev-idem").await, 1);
    assert_eq!(fx.items("idempotency").await.len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_cannot_be_reused_for_another_device() {
    let fx = fixture().await;
    fx.import("dev-k1").await;
    fx.import("dev-k2").await;
    fx.service
        .claim(&request("carol", "dev-k1", Some("same-key")))
        .await
        .expect("first");
    let reused = fx.service.claim(&request("carol", "dev-k2", Some("same-key"))).await;
    assert_eq!(reused, Err(ClaimError::IdempotencyKeyReused));
    assert_eq!(fx.claims_of_device("dev-k2").await, 0, "nothing was written");
    assert_eq!(fx.history("dev-k2").await.len(), 1);

    // Once the key's window has passed it is free again.
    fx.clock.advance(Duration::hours(25));
    let later = fx.service.claim(&request("carol", "dev-k2", Some("same-key"))).await;
    assert!(matches!(later, Ok(ClaimOutcome::Created(_))), "{later:?}");
}

#[tokio::test]
async fn a_reservation_past_its_deadline_reads_expired_and_frees_the_device() {
    let fx = fixture().await;
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
    let device = fx.service.store().device(&thing("dev-exp")).await.unwrap().unwrap();
    assert_eq!(device.held_by(fx.service.now()), None);

    // Another user can claim; the old claim is recorded as expired in the same change.
    let ClaimOutcome::Created(second) = fx.service.claim(&request("bob", "dev-exp", None)).await.unwrap() else {
        panic!("bob gets a new claim");
    };
    let old = fx.service.store().claim(&first.claim_id).await.unwrap().unwrap();
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

#[tokio::test]
async fn the_expiry_sweep_records_overdue_claims_nobody_asked_about() {
    let fx = fixture().await;
    fx.import("dev-sweep").await;
    fx.import("dev-fresh").await;
    let overdue = fx.service.claim(&request("alice", "dev-sweep", None)).await.unwrap();
    fx.clock.advance(Duration::minutes(10));
    fx.service.claim(&request("bob", "dev-fresh", None)).await.unwrap();
    fx.clock.advance(Duration::minutes(6));

    let due = fx.service.store().overdue_claims(fx.service.now(), 100).await.unwrap();
    let due_ids: Vec<_> = due.iter().map(|c| c.claim_id.clone()).collect();
    assert_eq!(due_ids, [overdue.claim().claim_id.clone()]);

    let expired = fx.service.expire_if_overdue(&thing("dev-sweep")).await.unwrap();
    assert_eq!(expired, Some(overdue.claim().claim_id.clone()));
    // Running it again (a retried sweep) changes nothing.
    assert_eq!(fx.service.expire_if_overdue(&thing("dev-sweep")).await.unwrap(), None);
    let device = fx.service.store().device(&thing("dev-sweep")).await.unwrap().unwrap();
    assert_eq!(device.holder, Holder::Free);
    assert!(fx
        .service
        .store()
        .overdue_claims(fx.service.now(), 100)
        .await
        .unwrap()
        .is_empty());
    let events = fx.events("dev-sweep").await;
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2],
        (HistoryEvent::Expired, Some(overdue.claim().claim_id.clone()))
    );
    let claim = fx
        .service
        .store()
        .claim(&overdue.claim().claim_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.state, ClaimState::Expired);
    assert_eq!(claim.next_publish_at, None, "an expired claim owes no publish");
}

#[tokio::test]
async fn only_the_owner_releases_and_the_device_becomes_claimable() {
    let fx = fixture().await;
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
            (HistoryEvent::EndpointPublished, Some(owned.clone())),
            (HistoryEvent::Provisioned, Some(owned.clone())),
            (HistoryEvent::Released, Some(owned.clone())),
            (HistoryEvent::Claimed, Some(bobs.claim().claim_id.clone())),
        ]
    );
    let release_entry = &fx.history("dev-rel").await[4];
    assert_eq!(release_entry.actor, Actor::User(user("alice")));
}

#[tokio::test]
async fn disabled_devices_cannot_be_claimed_and_look_unknown() {
    let fx = fixture().await;
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
    assert_eq!(fx.claims_of_device("dev-off").await, 0);

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

#[tokio::test]
async fn history_is_append_only_across_every_operation() {
    let fx = fixture().await;
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
    let device = fx.service.store().device(&thing("dev-hist")).await.unwrap().unwrap();
    let mut rewrite = DeviceChange::on(&device);
    let mut rewritten = last[0].clone();
    rewritten.event = HistoryEvent::Released;
    rewrite.history.push(rewritten.clone());
    rewrite.device.history_len += 1;
    assert!(matches!(
        fx.service.store().commit(rewrite).await,
        Err(CommitError::Store(StoreError::Corrupt(_)))
    ));
    // …and numbered as if the history were shorter than it is, DynamoDB's condition refuses it.
    let mut lying = DeviceChange::on(&device);
    lying.expected_history_len = 0;
    lying.device.history_len = 1;
    lying.history.push(rewritten);
    assert_eq!(fx.service.store().commit(lying).await, Err(CommitError::Conflict));
    assert_eq!(&fx.history("dev-hist").await, last);
    let after = fx.service.store().device(&thing("dev-hist")).await.unwrap().unwrap();
    assert_eq!(after, device, "the device did not change either");
}

#[tokio::test]
async fn a_stale_decision_never_lands() {
    let fx = fixture().await;
    fx.import("dev-stale").await;
    let before = fx.service.store().device(&thing("dev-stale")).await.unwrap().unwrap();
    fx.service.claim(&request("alice", "dev-stale", None)).await.unwrap();

    // A change decided on the old version (as a racing writer would) is refused whole.
    let mut stale = DeviceChange::on(&before);
    stale.device.disabled = true;
    assert_eq!(fx.service.store().commit(stale).await, Err(CommitError::Conflict));
    let now = fx.service.store().device(&thing("dev-stale")).await.unwrap().unwrap();
    assert!(!now.disabled);
}

#[tokio::test]
async fn reimporting_never_touches_ownership() {
    let fx = fixture().await;
    fx.import("dev-imp").await;
    let claim = fx.claim_and_own("alice", "dev-imp").await;
    let same = NewDevice {
        thing_name: thing("dev-imp"),
        vendor: "espressif".into(),
        sku: Some("KETTLE-2".into()),
        code_hash: None,
        allow_thing_name: None,
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
    let device = fx.service.store().device(&thing("dev-imp")).await.unwrap().unwrap();
    assert_eq!(device.sku.as_deref(), Some("KETTLE-3"));
    assert!(matches!(device.holder, Holder::Owned { claim_id, .. } if claim_id == claim));
}

#[tokio::test]
async fn devices_held_by_a_user_page_through_their_own_devices_only() {
    let fx = fixture().await;
    for i in 0..5 {
        fx.import(&format!("dev-list-{i}")).await;
    }
    fx.import("dev-other").await;
    for i in 0..5 {
        fx.service
            .claim(&request("dana", &format!("dev-list-{i}"), None))
            .await
            .unwrap();
    }
    fx.service.claim(&request("erin", "dev-other", None)).await.unwrap();

    let store = fx.service.store();
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

    // Erin cannot use Dana's page token.
    let dana_page = store.devices_held_by(&user("dana"), None, 2).await.unwrap();
    let token = dana_page.next_token.expect("more pages");
    assert_eq!(
        store.devices_held_by(&user("erin"), Some(&token), 2).await,
        Err(claim_shared::ports::PageError::InvalidToken)
    );
}

#[tokio::test]
async fn a_store_that_is_down_fails_cleanly() {
    // Nothing listens on port 9 (discard) here: every call fails to connect.
    let client = dynamodb_at("http://127.0.0.1:9").await;
    let service = ClaimService::new(
        DynamoOwnershipStore::new(client, "unreachable"),
        ManualClock::at(datetime!(2026-03-01 12:00 UTC)),
        ClaimSettings::default(),
    );
    let result = service.claim(&request("alice", "dev-1", None)).await;
    assert!(
        matches!(result, Err(ClaimError::Store(StoreError::Unavailable(_)))),
        "{result:?}"
    );
}

/// Captures what the code under test logs, as the JSON lines CloudWatch would receive.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn claim_decisions_are_logged_with_their_fields_but_never_the_full_code() {
    let fx = fixture().await;
    let code = "a1b2c3d4-e5f6-7890-abcd-ef0123456789";
    fx.import(code).await;

    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let claim = {
        let _guard = tracing::subscriber::set_default(subscriber);
        let claim = fx.service.claim(&request("alice", code, None)).await.unwrap();
        fx.service.claim(&request("bob", code, None)).await.unwrap_err();
        claim
    };

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let decisions: Vec<&serde_json::Value> = events
        .iter()
        .map(|e| &e["fields"])
        .filter(|f| f["event"] == "claim_decision")
        .collect();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0]["outcome"], "created");
    assert_eq!(decisions[0]["claim_id"], claim.claim().claim_id.as_str());
    assert!(decisions[0]["latency_ms"].is_u64());
    assert_eq!(decisions[1]["outcome"], "already_claimed");
    assert_eq!(decisions[1]["thing_name"], "a1b2…(36 chars)");
    assert!(!text.contains(code), "the full label code never reaches the logs");
}

#[tokio::test]
async fn a_claim_that_was_not_sent_is_never_recorded_as_published() {
    let fx = fixture().await;
    fx.import("dev-unsent").await;
    let claim = fx.service.claim(&request("alice", "dev-unsent", None)).await.unwrap();
    let claim_id = claim.claim().claim_id.clone();
    // Expired, then renewed by a retry: live again and owing a publish.
    fx.clock.advance(Duration::minutes(16));
    fx.service.retry(&user("alice"), &claim_id).await.unwrap();

    // A deliverer that decided on an older copy (expired) sends nothing and says so.
    let recorded = fx.service.record_publish(&claim_id, &PublishAttempt::NotSent).await;
    assert_eq!(recorded, Ok(Progress::Ignored(ClaimState::Pending)));
    let stored = fx.service.store().claim(&claim_id).await.unwrap().unwrap();
    assert_eq!(stored.state, ClaimState::Pending, "not published");
    assert!(stored.next_publish_at.is_some(), "still owes its publish");

    // Once it is really dead, the same report takes it out of the outbox.
    fx.clock.advance(Duration::minutes(16));
    fx.service
        .record_publish(&claim_id, &PublishAttempt::NotSent)
        .await
        .unwrap();
    let stored = fx.service.store().claim(&claim_id).await.unwrap().unwrap();
    assert_eq!(stored.state, ClaimState::Expired);
    assert_eq!(stored.next_publish_at, None);
}

#[tokio::test]
async fn a_publisher_lease_has_one_holder_until_it_lapses() {
    let fx = fixture().await;
    let store = fx.service.store();
    let now = fx.service.now();
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

// ---- label codes distinct from the ThingName ---------------------------------------------------

fn code_key() -> claim_shared::domain::label_code::LabelCodeKey {
    claim_shared::domain::label_code::LabelCodeKey::new(b"test-label-code-key-0123456789abcdef").unwrap()
}

fn label(raw: &str) -> claim_shared::domain::label_code::LabelCode {
    claim_shared::domain::label_code::LabelCode::parse(raw).unwrap()
}

impl Fixture {
    /// The same table, with label codes enabled.
    fn coded_service(&self) -> Service {
        ClaimService::new(
            DynamoOwnershipStore::new(self.client.clone(), &self.table),
            self.clock.clone(),
            ClaimSettings::default(),
        )
        .with_label_code_key(Some(code_key()))
    }
}

fn coded(name: &str, code: Option<&str>, allow_thing_name: Option<bool>) -> NewDevice {
    NewDevice::parse(name, "espressif", Some("KETTLE-2"))
        .unwrap()
        .with_label_code(code, allow_thing_name, Some(&code_key()))
        .unwrap()
}

fn by_code(who: &str, code: &str, key: Option<&str>) -> ClaimRequest {
    let mut request = request(who, "placeholder", key);
    request.code = label(code);
    request
}

#[tokio::test]
async fn a_label_code_belongs_to_one_device_and_moves_with_it() {
    let fx = fixture().await;
    let service = fx.coded_service();
    let store = service.store();
    let ops = Actor::Operator("factory-import".into());
    let hash = |code: &str| code_key().hash(&label(code));

    assert_eq!(
        service
            .import(&coded("dev-code-a", Some("LBL-1/a"), None), ops.clone())
            .await,
        Ok(ImportOutcome::Created)
    );
    assert_eq!(
        store.thing_by_code(&hash("LBL-1/a")).await,
        Ok(Some(thing("dev-code-a")))
    );
    let device = store.device(&thing("dev-code-a")).await.unwrap().unwrap();
    assert_eq!(device.code_hash, Some(hash("LBL-1/a")));
    assert!(
        !device.thing_name_claims,
        "a new code closes ThingName claims by default"
    );

    // The same code for a second device: refused, nothing of it written.
    assert_eq!(
        service
            .import(&coded("dev-code-b", Some("LBL-1/a"), None), ops.clone())
            .await,
        Err(claim_shared::service::DeviceOpError::CodeInUse)
    );
    assert_eq!(store.device(&thing("dev-code-b")).await, Ok(None));
    assert_eq!(
        store.thing_by_code(&hash("LBL-1/a")).await,
        Ok(Some(thing("dev-code-a")))
    );

    // Imported again unchanged (with or without its code): nothing changes.
    for again in [
        coded("dev-code-a", Some("LBL-1/a"), None),
        coded("dev-code-a", None, None),
    ] {
        assert_eq!(service.import(&again, ops.clone()).await, Ok(ImportOutcome::Unchanged));
    }
    assert_eq!(fx.history("dev-code-a").await.len(), 1);

    // Claimed and owned by its code; then the OEM changes the code: the old lookup is gone, the
    // new one is there, ownership is untouched, and the old code is free for another device.
    let owner = match service.claim(&by_code("alice", "LBL-1/a", None)).await.unwrap() {
        ClaimOutcome::Created(claim) => claim,
        other => panic!("{other:?}"),
    };
    assert_eq!(owner.thing_name, thing("dev-code-a"));
    service.mark_provisioned(&owner.claim_id).await.unwrap();
    assert_eq!(
        service
            .import(&coded("dev-code-a", Some("LBL-2"), None), ops.clone())
            .await,
        Ok(ImportOutcome::Updated)
    );
    assert_eq!(store.thing_by_code(&hash("LBL-1/a")).await, Ok(None));
    assert_eq!(store.thing_by_code(&hash("LBL-2")).await, Ok(Some(thing("dev-code-a"))));
    let device = store.device(&thing("dev-code-a")).await.unwrap().unwrap();
    assert!(matches!(&device.holder, Holder::Owned { claim_id, .. } if *claim_id == owner.claim_id));
    assert_eq!(
        service.claim(&by_code("bob", "LBL-1/a", None)).await,
        Err(ClaimError::DeviceNotFound),
        "the old code names nothing any more"
    );
    assert_eq!(
        service
            .claim(&by_code("alice", "LBL-2", None))
            .await
            .map(|o| o.claim().claim_id.clone()),
        Ok(owner.claim_id.clone()),
        "the new code names the owner's device"
    );
    assert_eq!(
        service
            .import(&coded("dev-code-b", Some("LBL-1/a"), None), ops.clone())
            .await,
        Ok(ImportOutcome::Created)
    );
    assert_eq!(
        store.thing_by_code(&hash("LBL-1/a")).await,
        Ok(Some(thing("dev-code-b")))
    );

    // Only the setting changes: updated, the lookup stays.
    assert_eq!(
        service
            .import(&coded("dev-code-a", None, Some(true)), ops.clone())
            .await,
        Ok(ImportOutcome::Updated)
    );
    let device = store.device(&thing("dev-code-a")).await.unwrap().unwrap();
    assert!(device.thing_name_claims);
    assert_eq!(device.code_hash, Some(hash("LBL-2")));
    assert_eq!(store.thing_by_code(&hash("LBL-2")).await, Ok(Some(thing("dev-code-a"))));
}

#[tokio::test]
async fn claims_by_code_and_by_thing_name_follow_the_devices_setting() {
    let fx = fixture().await;
    let service = fx.coded_service();
    let ops = Actor::Operator("factory-import".into());
    service
        .import(&coded("dev-closed", Some("CODE-closed"), None), ops.clone())
        .await
        .unwrap();
    service
        .import(&coded("dev-open", Some("CODE-open"), Some(true)), ops.clone())
        .await
        .unwrap();
    service
        .import(&coded("dev-plain", None, None), ops.clone())
        .await
        .unwrap();

    // A separate code, ThingName claims not allowed: the code works, the ThingName reads unknown.
    assert_eq!(
        service.claim(&request("alice", "dev-closed", None)).await,
        Err(ClaimError::DeviceNotFound)
    );
    let claim = service.claim(&by_code("alice", "CODE-closed", None)).await.unwrap();
    assert!(matches!(&claim, ClaimOutcome::Created(c) if c.thing_name == thing("dev-closed")));

    // Allowed: both work, and an Idempotency-Key binds to the device, whichever way it was named.
    let first = service.claim(&by_code("bob", "CODE-open", Some("k-1"))).await.unwrap();
    let again = service.claim(&request("bob", "dev-open", Some("k-1"))).await.unwrap();
    assert_eq!(first.claim().claim_id, again.claim().claim_id);
    assert_eq!(
        service.claim(&request("carol", "dev-open", None)).await,
        Err(ClaimError::AlreadyClaimed),
        "named by its ThingName, the device is found"
    );

    // No code: the ThingName, as before label codes.
    assert!(matches!(
        service.claim(&request("dana", "dev-plain", None)).await,
        Ok(ClaimOutcome::Created(_))
    ));
    // Unknown codes and codes of another key are unknown devices.
    assert_eq!(
        service.claim(&by_code("erin", "CODE-nobody", None)).await,
        Err(ClaimError::DeviceNotFound)
    );
    assert_eq!(
        fx.service.claim(&by_code("erin", "CODE-open", None)).await,
        Err(ClaimError::DeviceNotFound),
        "without the key a code is only a ThingName"
    );
    // Without the key only ThingNames are codes; with it, any printable code is.
    assert!(fx.service.parse_code("a/b").is_err());
    assert!(service.parse_code("a/b").is_ok());
    assert!(service.parse_code("a b").is_err());
}

#[tokio::test]
async fn claim_decisions_by_label_code_never_log_the_code_or_its_hash() {
    let fx = fixture().await;
    let service = fx.coded_service();
    let code = "OEM-SECRET-CODE-4711";
    service
        .import(&coded("dev-logged", Some(code), None), Actor::Operator("t".into()))
        .await
        .unwrap();
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        service.claim(&by_code("alice", code, None)).await.unwrap();
        // A near miss of the code (shaped like a ThingName): not found, and not named.
        service
            .claim(&by_code("bob", "OEM-SECRET-CODE-4712", None))
            .await
            .unwrap_err();
        service.claim(&request("bob", "dev-logged", None)).await.unwrap_err();
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let decisions: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fields"].clone())
        .filter(|f| f["event"] == "claim_decision")
        .collect();
    assert_eq!(decisions.len(), 3, "{text}");
    assert_eq!(
        (
            &decisions[0]["outcome"],
            &decisions[0]["by"],
            &decisions[0]["thing_name"]
        ),
        (
            &serde_json::json!("created"),
            &serde_json::json!("label_code"),
            &serde_json::json!("dev-…(10 chars)")
        )
    );
    for refused in &decisions[1..] {
        assert_eq!(refused["outcome"], "device_not_found");
        assert!(
            refused.get("thing_name").is_none() && refused.get("by").is_none(),
            "{refused}"
        );
    }
    let hash = code_key().hash(&label(code));
    assert!(!text.contains("OEM-") && !text.contains(hash.as_str()), "{text}");
}

#[tokio::test]
async fn failed_attempts_are_limited_per_user_and_per_user_on_a_device_without_locking_out_others() {
    let fx = fixture().await;
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

    // Guessing codes: every unknown code counts against the user, whatever the code; the held
    // device's 409s did not (the code was right).
    let attempts = fx.inspect_for("limit-3", "impatient").await.attempts.expect("attempts");
    assert_eq!(attempts.failed_by_user, 0);
    for i in 0..limits.per_user {
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
    let mut keys: Vec<String> = fx
        .items("attempts")
        .await
        .iter()
        .map(|item| item["pk"].as_s().unwrap().clone())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["ATTEMPTS#DEVICE#limit-1#USER#impatient", "ATTEMPTS#USER#impatient"]
    );

    // The next window starts from zero.
    fx.clock.advance(limits.window);
    let later = fx.service.claim(&request("impatient", "limit-3", None)).await;
    assert!(matches!(later, Ok(ClaimOutcome::Created(_))), "{later:?}");
}
