//! The post-provisioning handler: event fixtures shaped like AWS IoT's (protocol §5) as the topic
//! rules deliver them, and their effect on claims in DynamoDB Local; payloads that are no event at
//! all, as raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use claim_shared::{
    domain::{
        claim::ClaimState,
        device::Holder,
        history::HistoryEvent,
        ids::{ThingName, UserId},
    },
    ports::OwnershipStore,
    service::{ClaimError, ClaimOutcome, ClaimService, ClaimSettings, ReleaseError},
};
use claim_tests::{
    fixture::{DynamoOwnershipStore, Fixture as StoreFixture, LocalTable},
    ManualClock,
};
use provisioning_events::{
    events::{IotEvent, Meaning},
    handle, handle_raw,
};
use serde_json::{json, Value};
use time::Duration;

const THING: &str = "a1b2c3d4-e5f6-7890-abcd-ef0123456789";
const CERT: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn fixture(name: &str) -> Value {
    let text = match name {
        "thing_created" => include_str!("fixtures/thing_created.json"),
        "presence_connected" => include_str!("fixtures/presence_connected.json"),
        "certificate_registered" => include_str!("fixtures/certificate_registered.json"),
        _ => unreachable!(),
    };
    serde_json::from_str(text).unwrap()
}

/// The fixture for another device.
fn for_thing(name: &str, thing: &str) -> Value {
    let mut event = fixture(name);
    for field in ["thingName", "thing_name_from_topic", "clientId", "client_id_from_topic"] {
        if event.get(field).is_some() {
            event[field] = json!(thing);
        }
    }
    event
}

#[test]
fn each_event_kind_parses_into_what_it_means() {
    let Meaning::Arrival(created) = IotEvent::parse(&fixture("thing_created")).unwrap().meaning().unwrap() else {
        panic!("a created thing is an arrival");
    };
    assert_eq!(created.thing_name.as_str(), THING);
    assert_eq!(created.account_id.as_deref(), Some("123456789012"));
    assert_eq!(created.certificate_id, None);

    let Meaning::Arrival(connected) = IotEvent::parse(&fixture("presence_connected"))
        .unwrap()
        .meaning()
        .unwrap()
    else {
        panic!("a connection is an arrival");
    };
    assert_eq!(connected.thing_name.as_str(), THING);
    assert_eq!(connected.certificate_id.as_deref(), Some(CERT));

    assert_eq!(
        IotEvent::parse(&fixture("certificate_registered"))
            .unwrap()
            .meaning()
            .unwrap(),
        Meaning::Irrelevant("certificate_registered")
    );
}

#[test]
fn unknown_fields_are_ignored_and_missing_optional_ones_tolerated() {
    let mut event = fixture("presence_connected");
    event["brandNewField"] = json!({"nested": [1, 2, 3]});
    event.as_object_mut().unwrap().remove("principalIdentifier");
    event.as_object_mut().unwrap().remove("timestamp");
    let Meaning::Arrival(arrival) = IotEvent::parse(&event).unwrap().meaning().unwrap() else {
        panic!("still an arrival");
    };
    assert_eq!(arrival.certificate_id, None);

    // Without the rule's additions, the payload's own markers classify it.
    let mut bare = fixture("thing_created");
    bare.as_object_mut().unwrap().remove("event_kind");
    bare.as_object_mut().unwrap().remove("thing_name_from_topic");
    assert!(matches!(
        IotEvent::parse(&bare).unwrap().meaning().unwrap(),
        Meaning::Arrival(_)
    ));

    let mut updated = fixture("thing_created");
    updated["operation"] = json!("UPDATED");
    assert_eq!(
        IotEvent::parse(&updated).unwrap().meaning().unwrap(),
        Meaning::Irrelevant("thing_event_not_created")
    );
    let mut disconnected = fixture("presence_connected");
    disconnected["eventType"] = json!("disconnected");
    assert_eq!(
        IotEvent::parse(&disconnected).unwrap().meaning().unwrap(),
        Meaning::Irrelevant("presence_not_connected")
    );
}

#[test]
fn garbage_is_refused_with_a_reason() {
    let mut mismatched = fixture("thing_created");
    mismatched["thingName"] = json!("another-thing");
    let mut wildcard = fixture("presence_connected");
    wildcard["clientId"] = json!("a/#");
    wildcard["client_id_from_topic"] = json!("a/#");
    let mut nameless = fixture("presence_connected");
    nameless.as_object_mut().unwrap().remove("clientId");
    nameless.as_object_mut().unwrap().remove("client_id_from_topic");
    let mut wrong_type = fixture("thing_created");
    wrong_type["thingName"] = json!(42);
    for garbage in [
        json!(null),
        json!([]),
        json!("text"),
        json!({}),
        json!({"event_kind": "thing_created", "operation": 5}),
        mismatched,
        wildcard,
        nameless,
        wrong_type,
    ] {
        let result = IotEvent::parse(&garbage).and_then(|e| e.meaning());
        assert!(result.is_err(), "{garbage} gave {result:?}");
    }
}

#[test]
fn refusal_reasons_never_quote_the_payload() {
    let secret = "SECRET-VALUE-1234";
    let mut thing = fixture("thing_created");
    thing["timestamp"] = json!(secret);
    let mut presence = fixture("presence_connected");
    presence["principalIdentifier"] = json!({ "nested": secret });
    let mut certificate = fixture("certificate_registered");
    certificate["certificateId"] = json!([secret]);
    for garbage in [thing, presence, certificate] {
        let reason = IotEvent::parse(&garbage).unwrap_err().to_string();
        assert!(reason.ends_with("a field has the wrong type"), "{reason}");
        assert!(!reason.contains("SECRET"), "{reason}");
    }
}

#[test]
fn payload_bytes_that_are_no_event_object_are_refused_with_a_short_reason() {
    let event = serde_json::to_vec(&fixture("thing_created")).unwrap();
    for (payload, reason) in [
        (b"xyz SECRET".to_vec(), "not JSON"),
        (b"".to_vec(), "empty"),
        (b" \r\n\t".to_vec(), "empty"),
        (vec![0xff, 0xfe, 0x00], "not UTF-8"),
        (b"{\"a\": \"\xff\"}".to_vec(), "not UTF-8"),
        ("[".repeat(100_000).into_bytes(), "JSON nested too deep"),
        ("{\"a\":".repeat(50_000).into_bytes(), "JSON nested too deep"),
        (vec![b' '; 1024 * 1024], "too large"),
        (event[..event.len() / 2].to_vec(), "truncated JSON"),
        ([&event[..], b" SECRET"].concat(), "not JSON"),
        (b"null".to_vec(), "not a JSON object"),
        (b"[1, 2, 3]".to_vec(), "not a JSON object"),
        (b"\"SECRET\"".to_vec(), "not a JSON object"),
    ] {
        let refused = provisioning_events::events::decode(&payload).unwrap_err();
        let start = String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned();
        assert_eq!(refused.to_string(), reason, "{start}…");
    }
    assert_eq!(
        provisioning_events::events::decode(&event).unwrap(),
        fixture("thing_created")
    );
}

struct Fixture {
    claims: ClaimService<DynamoOwnershipStore, ManualClock>,
    store: DynamoOwnershipStore,
    clock: ManualClock,
    table: LocalTable,
}

async fn fixture_service() -> Fixture {
    fixture_with(ClaimSettings::default()).await
}

/// The handler's use cases on a fresh table and a manual clock.
async fn fixture_with(settings: ClaimSettings) -> Fixture {
    let stores = StoreFixture::<DynamoOwnershipStore>::new().await;
    Fixture {
        claims: stores.service_with(settings),
        table: stores.table().clone(),
        store: stores.store,
        clock: stores.clock,
    }
}

impl Fixture {
    async fn import(&self, thing: &str) {
        support::import(&self.claims, thing).await;
    }

    async fn claim(&self, user: &str, thing: &str) -> Result<ClaimOutcome, ClaimError> {
        support::claim(&self.claims, user, thing).await
    }

    async fn deliver(&self, event: &Value) -> String {
        let answer = handle(&self.claims, event, Some("eu-west-1"), Some("123456789012"))
            .await
            .unwrap();
        answer["outcome"].as_str().unwrap().to_owned()
    }

    async fn events(&self, thing: &str) -> Vec<HistoryEvent> {
        let history = self.store.history(&ThingName::parse(thing).unwrap()).await.unwrap();
        history.into_iter().map(|e| e.event).collect()
    }

    /// Every item of the fixture's table, to compare.
    async fn snapshot(&self) -> impl PartialEq + std::fmt::Debug {
        let scanned = self
            .table
            .client
            .scan()
            .table_name(&self.table.name)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await;
        scanned.unwrap()
    }

    async fn holder(&self, thing: &str) -> Holder {
        let device = self
            .store
            .device(&ThingName::parse(thing).unwrap())
            .await
            .unwrap()
            .unwrap();
        device.holder
    }
}

#[tokio::test]
async fn an_arrival_completes_the_claim_and_duplicates_out_of_order_change_nothing_more() {
    let fx = fixture_service().await;
    fx.import(THING).await;
    let claim = fx.claim("alice", THING).await.unwrap().claim().clone();
    fx.claims.mark_published(&claim.claim_id).await.unwrap();

    // Presence first (the thing-created event can come later), delivered without the function's
    // own account and region, so a later event has details to add; then everything five times over.
    let first = handle(&fx.claims, &fixture("presence_connected"), None, None)
        .await
        .unwrap();
    assert_eq!(first["outcome"], "completed");
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        for name in ["thing_created", "presence_connected", "certificate_registered"] {
            outcomes.push(fx.deliver(&fixture(name)).await);
        }
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "details_added").count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes
        .iter()
        .all(|o| ["details_added", "already_owned", "ignored"].contains(&o.as_str())));

    let read = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(read.state, ClaimState::Provisioned);
    assert_eq!(
        fx.events(THING).await,
        [HistoryEvent::Imported, HistoryEvent::Claimed, HistoryEvent::Provisioned],
        "one history entry for the arrival"
    );
    let device = fx
        .store
        .device(&ThingName::parse(THING).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(device.holder, Holder::Owned { ref user, .. } if user.as_str() == "alice"));
    let provisioning = device.provisioning.unwrap();
    assert_eq!(provisioning.certificate_id.as_deref(), Some(CERT));
    assert_eq!(provisioning.account_id.as_deref(), Some("123456789012"));
    assert_eq!(provisioning.region.as_deref(), Some("eu-west-1"));
}

#[tokio::test]
async fn events_for_unknown_or_unclaimed_things_change_nothing() {
    let fx = fixture_service().await;
    assert_eq!(
        fx.deliver(&for_thing("thing_created", "never-imported")).await,
        "unknown_thing"
    );
    fx.import("idle-device").await;
    assert_eq!(
        fx.deliver(&for_thing("presence_connected", "idle-device")).await,
        "unclaimed"
    );
    assert_eq!(fx.events("idle-device").await, [HistoryEvent::Imported]);
    assert_eq!(fx.holder("idle-device").await, Holder::Free);
    assert_eq!(fx.deliver(&json!({"what": "garbage"})).await, "malformed");
}

#[tokio::test]
async fn a_late_arrival_completes_its_expired_claim_within_the_grace_period_only() {
    let fx = fixture_service().await;
    fx.import("late-1").await;
    fx.import("late-2").await;
    let first = fx.claim("alice", "late-1").await.unwrap().claim().clone();
    let second = fx.claim("bob", "late-2").await.unwrap().claim().clone();

    // Both expire, and the sweep records it.
    fx.clock.advance(Duration::minutes(16));
    assert_eq!(fx.claims.sweep_overdue(100).await.unwrap(), 2);
    assert_eq!(fx.holder("late-1").await, Holder::Free);

    // Ten minutes after its deadline the device arrives: the arrival proves the claim worked.
    fx.clock.advance(Duration::minutes(9));
    assert_eq!(
        fx.deliver(&for_thing("presence_connected", "late-1")).await,
        "completed"
    );
    let first = fx.store.claim(&first.claim_id).await.unwrap().unwrap();
    assert_eq!(first.state, ClaimState::Provisioned);

    // Past the grace period, it does not.
    fx.clock.advance(Duration::minutes(10));
    assert_eq!(
        fx.deliver(&for_thing("presence_connected", "late-2")).await,
        "unclaimed"
    );
    let second = fx.store.claim(&second.claim_id).await.unwrap().unwrap();
    assert_eq!(second.state, ClaimState::Expired);
}

#[tokio::test]
async fn an_arrival_while_another_user_holds_the_device_completes_that_users_claim() {
    let fx = fixture_service().await;
    fx.import("contested").await;
    let alices = fx.claim("alice", "contested").await.unwrap().claim().clone();
    fx.clock.advance(Duration::minutes(16));
    let bobs = fx.claim("bob", "contested").await.unwrap().claim().clone();

    assert_eq!(fx.deliver(&for_thing("thing_created", "contested")).await, "completed");
    assert!(matches!(fx.holder("contested").await, Holder::Owned { ref claim_id, .. } if *claim_id == bobs.claim_id));
    let alices = fx.store.claim(&alices.claim_id).await.unwrap().unwrap();
    assert_eq!(alices.state, ClaimState::Expired, "the superseded claim stays expired");
}

#[tokio::test]
async fn the_sweep_alone_expires_a_claim_whose_device_never_arrives() {
    let fx = fixture_with(ClaimSettings {
        deadline: Duration::seconds(30),
        ..ClaimSettings::default()
    })
    .await;
    fx.import("never-moves").await;
    let claim = fx.claim("alice", "never-moves").await.unwrap().claim().clone();
    fx.clock.advance(Duration::seconds(31));

    assert_eq!(fx.claims.sweep_overdue(100).await.unwrap(), 1);
    let stored = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(stored.state, ClaimState::Expired, "recorded, not just computed on read");
    assert_eq!(fx.holder("never-moves").await, Holder::Free);
    assert!(matches!(
        fx.claim("bob", "never-moves").await,
        Ok(ClaimOutcome::Created(_))
    ));
}

#[tokio::test]
async fn resale_needs_a_release_then_the_buyer_claims_the_factory_reset_device() {
    let fx = fixture_service().await;
    fx.import("resold").await;
    let first = fx.claim("seller", "resold").await.unwrap().claim().clone();
    assert_eq!(
        fx.deliver(&for_thing("presence_connected", "resold")).await,
        "completed"
    );

    // The buyer factory-resets the product: it is back in staging with the same ThingName. Without
    // a release, the buyer cannot claim it; reconnects of the owned device change nothing.
    assert_eq!(fx.claim("buyer", "resold").await, Err(ClaimError::AlreadyClaimed));
    assert_eq!(
        fx.deliver(&for_thing("presence_connected", "resold")).await,
        "already_owned"
    );

    // The seller releases; the buyer claims, the device arrives again: the buyer owns it.
    let seller = UserId::parse("seller").unwrap();
    let thing = ThingName::parse("resold").unwrap();
    fx.claims.release(&seller, &thing).await.unwrap();
    assert_eq!(
        fx.claims.release(&seller, &thing).await,
        Err(ReleaseError::DeviceNotFound)
    );
    let second = fx.claim("buyer", "resold").await.unwrap().claim().clone();
    assert_eq!(
        fx.deliver(&for_thing("presence_connected", "resold")).await,
        "completed"
    );
    assert!(matches!(fx.holder("resold").await, Holder::Owned { ref user, .. } if user.as_str() == "buyer"));
    assert_eq!(
        fx.events("resold").await,
        [
            HistoryEvent::Imported,
            HistoryEvent::Claimed,
            HistoryEvent::Provisioned,
            HistoryEvent::Released,
            HistoryEvent::Claimed,
            HistoryEvent::Provisioned
        ]
    );
    let history = fx.store.history(&thing).await.unwrap();
    assert_eq!(history[2].claim_id.as_ref(), Some(&first.claim_id));
    assert_eq!(history[5].claim_id.as_ref(), Some(&second.claim_id));
}

#[tokio::test]
async fn payloads_that_are_no_event_answer_malformed_and_change_nothing() {
    let fx = fixture_service().await;
    fx.import(THING).await;
    let claim = fx.claim("alice", THING).await.unwrap().claim().clone();
    fx.claims.mark_published(&claim.claim_id).await.unwrap();
    let before = fx.snapshot().await;

    // The event that completes this claim, padded past the size limit.
    let mut oversized = fixture("presence_connected");
    oversized["padding"] = json!("x".repeat(1024 * 1024));
    let oversized = serde_json::to_vec(&oversized).unwrap();
    for (name, payload) in [
        ("not JSON", b"xyz".to_vec()),
        ("empty", Vec::new()),
        ("not UTF-8", vec![0xff, 0xfe, 0x00]),
        ("nested 100k deep", "[".repeat(100_000).into_bytes()),
        ("1 MiB", oversized),
        ("null", b"null".to_vec()),
        ("an array", b"[1, 2, 3]".to_vec()),
    ] {
        let answer = handle_raw(&fx.claims, &payload, Some("eu-west-1"), Some("123456789012")).await;
        assert_eq!(answer, Ok(json!({"outcome": "malformed"})), "{name}");
    }
    assert_eq!(fx.snapshot().await, before, "no record changed");

    let event = serde_json::to_vec(&fixture("presence_connected")).unwrap();
    let answer = handle_raw(&fx.claims, &event, Some("eu-west-1"), Some("123456789012")).await;
    assert_eq!(answer, Ok(json!({"outcome": "completed", "gate": "expected"})));
    let read = fx.store.claim(&claim.claim_id).await.unwrap().unwrap();
    assert_eq!(read.state, ClaimState::Provisioned);
}

#[tokio::test]
async fn a_disabled_device_arriving_completes_nothing_until_enabled() {
    let fx = fixture_service().await;
    fx.import(THING).await;
    let claim = fx.claim("alice", THING).await.unwrap().claim().clone();
    let thing = ThingName::parse(THING).unwrap();
    fx.claims.set_disabled(&thing, true, "ops", None).await.unwrap();
    assert_eq!(fx.deliver(&fixture("thing_created")).await, "disabled");
    assert_eq!(fx.deliver(&fixture("presence_connected")).await, "disabled");
    assert!(matches!(fx.holder(THING).await, Holder::Reserved { .. }), "not owned");
    fx.claims.set_disabled(&thing, false, "ops", None).await.unwrap();
    assert_eq!(fx.deliver(&fixture("presence_connected")).await, "completed");
    assert!(matches!(fx.holder(THING).await, Holder::Owned { claim_id, .. } if claim_id == claim.claim_id));
}
