//! A vendor's backlog goes out at AWS IoT's real limits: 400 claims owed in the outbox are
//! delivered by one drain over one MQTT connection of the vendor's claim-thing, pipelined (at most
//! 100 publishes per second and 100 unacknowledged), each device's message exactly once, and the
//! broker's log shows the client id connecting at most once per second and never twice at once.
//! The claims are on a table of the test's own (the stack's schedule does not see them, and the
//! table is dropped afterwards); the broker is the stack's staging Mosquitto. A test binary of its
//! own, so it runs alone: its 400 claims would slow the shared DynamoDB Local under the
//! end-to-end tests' own deadlines.

// A failed expectation in a test is the test failing: unwrap/expect are the right tool here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use claim_shared::{
    domain::{claim::ClaimState, history::Actor, ids::ThingName, registry::NewDevice},
    ports::OwnershipStore,
    service::ClaimOutcome,
};
use claim_tests::{
    e2e::{OwnOutbox, Stack},
    local_claim_thing_secret,
    mqtt::{connections_of, Observer},
};

const CLAIMS: usize = 400;

/// Devices imported and claimed at once while setting up.
const SETUP_AT_ONCE: usize = 20;

/// Messages per second the broker must see at least here: far above the one per second of a
/// connection per message, below the 100 per second of the pacing, for a loaded 2-core machine.
const MIN_RATE: f64 = 40.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_of_400_claims_goes_out_over_one_connection_within_aws_iot_quotas() {
    let stack = Stack::connect().await;
    let own = OwnOutbox::new().await;
    let vendor = format!("burst-{}", uuid::Uuid::new_v4().simple());
    let profile = local_claim_thing_secret(&stack.pki, stack.local.staging_port).unwrap();
    let client_id = profile["client_id"].as_str().unwrap().to_owned();
    own.put_profile(&vendor, &profile).await;

    // 400 devices of the vendor, each claimed (owed in the outbox, not published).
    let endpoints = std::sync::Arc::new(claim_shared::domain::endpoints::EndpointPlan::single(
        &stack.local.oem_endpoint,
    ));
    let mut things = Vec::with_capacity(CLAIMS);
    for chunk in 0..CLAIMS / SETUP_AT_ONCE {
        let claims = (0..SETUP_AT_ONCE).map(|i| {
            let thing = ThingName::parse(&format!("burst-{chunk}-{i}-{}", uuid::Uuid::new_v4().simple())).unwrap();
            let (own, vendor, endpoints) = (&own, &vendor, &endpoints);
            async move {
                let device = NewDevice {
                    thing_name: thing.clone(),
                    vendor: vendor.clone(),
                    sku: Some("BURST".into()),
                    code_hash: None,
                    allow_thing_name: None,
                    code_as_thing_name: None,
                };
                own.claims.import(&device, Actor::Operator("e2e".into())).await.unwrap();
                let request = claim_shared::service::ClaimRequest {
                    user: claim_shared::domain::ids::UserId::parse(&format!("user-{}", uuid::Uuid::new_v4())).unwrap(),
                    code: thing.clone().into(),
                    endpoints: endpoints.clone(),
                    region_hint: None,
                    idempotency_key: None,
                };
                let ClaimOutcome::Created(claim) = own.claims.claim(&request).await.unwrap() else {
                    panic!("accepted")
                };
                (thing, claim.claim_id)
            }
        });
        things.extend(futures::future::join_all(claims).await);
    }

    let observer = Observer::start(&stack.pki, stack.local.staging_port).await.unwrap();
    let started = Instant::now();
    // The messages' rate as the broker delivers them; the drain then records the results.
    let delivered = async {
        loop {
            if observer.seen("burst-").len() >= CLAIMS || started.elapsed() > Duration::from_secs(120) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (report, delivered) = tokio::join!(own.claims.drain(Duration::from_secs(300)), delivered);
    let drained = started.elapsed();
    let report = report.unwrap();
    assert_eq!((report.published, report.failed), (CLAIMS as u32, 0), "{report:?}");
    let seen = observer.seen("burst-");
    let rate = CLAIMS as f64 / delivered.as_secs_f64();

    // Each device got its endpoint message exactly once, and its claim says so.
    for (thing, claim_id) in &things {
        let topic = format!("{thing}/expresslink_config");
        let count = seen.iter().filter(|(t, _)| *t == topic).count();
        assert_eq!(count, 1, "{thing}: {count} messages");
        let claim = own.table.store().claim(claim_id).await.unwrap().unwrap();
        assert_eq!(
            claim.effective_state(own.claims.now()),
            ClaimState::EndpointPublished,
            "{thing}"
        );
    }
    // One connection for all of them, within the client id's quotas.
    let log = std::fs::read_to_string(stack.local.broker_log()).unwrap();
    let connections = connections_of(&log, &client_id);
    assert_eq!(
        connections.connects.len(),
        1,
        "one CONNECT for the backlog: {connections:?}"
    );
    assert_eq!(connections.quota_violations(), Vec::<String>::new());
    eprintln!(
        "{CLAIMS} claims: all messages at the broker after {delivered:?} ({rate:.0} messages/s), results \
         recorded after {drained:?}, {} CONNECT",
        connections.connects.len()
    );
    assert!(rate >= MIN_RATE, "{rate:.0} messages/s");
    own.table
        .client
        .delete_table()
        .table_name(&own.table.name)
        .send()
        .await
        .unwrap();
}
