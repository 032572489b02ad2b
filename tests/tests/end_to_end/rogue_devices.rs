//! The rogue-device gate on the running stack: modules that connect to the OEM endpoint, the IoT
//! events bridge, provisioning-events and the IoT control plane in moto (its recorded
//! `UpdateCertificate` calls). A device nothing sent is quarantined; a claimed device arriving and an
//! owned one reconnecting never are; a resold device quarantined in between comes back by its
//! buyer's claim.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use claim_shared::{
    adapters::{dynamodb::DynamoOwnershipStore, iotcontrol::IotCertificateControl},
    domain::{ids::ThingName, quarantine::GatePolicy},
    service::{ClaimService, ClaimSettings, LiftOutcome, SystemClock},
};
use claim_tests::{
    e2e::{Stack, DEMO_VENDOR},
    local_dynamodb,
    local_iot::{certificate_active, certificate_id_of, local_iot},
    mqtt,
};
use expresslink_sim::ModuleEvent;
use rumqttc::{Event, Packet};

/// Connects to the OEM endpoint as `thing` with its certificate (a module whose endpoint points
/// there), until the broker accepts, then disconnects.
async fn connect_to_oem(stack: &Stack, thing: &str) {
    let identity = stack.pki.client(thing).unwrap();
    let ca = stack.pki.ca_pem().unwrap();
    let (client, mut events) = mqtt::client(thing, "localhost", stack.local.oem_port, &ca, &identity).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "{thing}: no CONNACK from the OEM listener");
        if let Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), events.poll()).await
        {
            break;
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
}

/// The certificate of `thing`'s module, as AWS IoT names it.
fn certificate(stack: &Stack, thing: &str) -> String {
    certificate_id_of(&stack.pki.client(thing).unwrap().cert_pem).unwrap()
}

/// Waits until the certificate's status in the IoT control plane is `active`.
async fn wait_for_status(certificate: &str, active: bool) {
    let iot = local_iot().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = certificate_active(&iot, certificate).await.unwrap();
        if status == Some(active) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{certificate}: status {status:?}, wanted active={active}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The control plane calls moto recorded that switched `certificate` (`newStatus` values, in order).
fn recorded_switches(stack: &Stack, certificate: &str) -> Vec<String> {
    // Beside the stack's logs: .local/moto-recording.jsonl.
    let state = stack.local.api_log.parent().and_then(std::path::Path::parent).unwrap();
    let recording = state.join("moto-recording.jsonl");
    let text = std::fs::read_to_string(&recording).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["method"] == "PUT")
        .filter_map(|entry| {
            let url = entry["url"].as_str()?.to_owned();
            let (path, query) = url.split_once('?')?;
            path.ends_with(&format!("/certificates/{certificate}"))
                .then(|| {
                    query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix("newStatus=").map(str::to_owned))
                })
                .flatten()
        })
        .collect()
}

/// What an operator uses (claimctl's code path) on the stack's table and control plane.
async fn operator_service(stack: &Stack) -> ClaimService<DynamoOwnershipStore, SystemClock> {
    ClaimService::new(
        DynamoOwnershipStore::new(local_dynamodb().await, &stack.local.table),
        SystemClock,
        ClaimSettings::default(),
    )
    .with_certificate_control(
        std::sync::Arc::new(IotCertificateControl::new(local_iot().await)),
        GatePolicy::default(),
    )
}

#[tokio::test]
async fn a_device_nothing_sent_is_quarantined_and_an_operator_lifts_it() {
    let stack = Stack::connect().await;
    let rogue = format!("rogue-{}", uuid::Uuid::new_v4().simple());
    let cert = certificate(&stack, &rogue);
    connect_to_oem(&stack, &rogue).await;
    wait_for_status(&cert, false).await;
    assert_eq!(recorded_switches(&stack, &cert), ["INACTIVE"]);

    let operator = operator_service(&stack).await;
    let thing = ThingName::parse(&rogue).unwrap();
    let listed = operator.quarantines(None, 1000).await.unwrap();
    let entry = listed.iter().find(|q| q.thing_name == thing).expect("listed");
    assert_eq!(
        (entry.certificate_id.as_str(), entry.reason.as_str()),
        (cert.as_str(), "unknown_thing")
    );
    let log = std::fs::read_to_string(&stack.local.api_log).unwrap();
    let decision = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["event"] == "quarantine" && line["certificate_id"] == cert.as_str())
        .expect("one quarantine log line");
    assert_eq!(decision["outcome"], "quarantined");
    assert_eq!(decision["reason"], "unknown_thing");
    assert!(decision["latency_ms"].is_u64());
    assert!(!log.contains(&rogue), "ThingNames are redacted in logs");

    // Refused from now on, as AWS IoT refuses an inactive certificate: nothing more is recorded.
    connect_to_oem(&stack, &rogue).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recorded_switches(&stack, &cert), ["INACTIVE"]);

    let lifted = operator.lift_quarantine(&thing, "ops@example.com").await.unwrap();
    assert!(matches!(lifted, LiftOutcome::Lifted(_)));
    wait_for_status(&cert, true).await;
    assert!(operator.quarantine_of(&thing).await.unwrap().is_none());
}

#[tokio::test]
async fn a_claimed_device_arriving_and_an_owned_one_reconnecting_are_never_quarantined() {
    let stack = Stack::connect().await;
    let user = format!("owner-{}", uuid::Uuid::new_v4().simple());
    let thing = stack.new_device(DEMO_VENDOR).await;
    let cert = certificate(&stack, &thing);
    stack.claim_and_onboard(&user, &thing).await;
    // The owned device reconnects (power cycle, network change) twice.
    for _ in 0..2 {
        connect_to_oem(&stack, &thing).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for_status(&cert, true).await;
    assert!(recorded_switches(&stack, &cert).is_empty(), "never switched");
    let operator = operator_service(&stack).await;
    let parsed = ThingName::parse(&thing).unwrap();
    assert!(operator.quarantine_of(&parsed).await.unwrap().is_none());
}

#[tokio::test]
async fn a_resold_device_quarantined_in_between_comes_back_by_the_buyers_claim() {
    let stack = Stack::connect().await;
    let seller = format!("seller-{}", uuid::Uuid::new_v4().simple());
    let buyer = format!("buyer-{}", uuid::Uuid::new_v4().simple());
    let thing = stack.new_device(DEMO_VENDOR).await;
    let cert = certificate(&stack, &thing);
    let onboarded = ModuleEvent::ConnectedTo(stack.local.oem_endpoint.clone());
    stack.claim_and_onboard(&seller, &thing).await;
    let released = stack
        .call("DELETE", &format!("/v1/devices/{thing}"), &seller, None)
        .await;
    assert_eq!(released.status, 204);

    // Released but not reset: it reconnects to the OEM endpoint, owned by nobody.
    connect_to_oem(&stack, &thing).await;
    wait_for_status(&cert, false).await;

    // The buyer resets it (back in staging, same certificate) and claims it: the claim activates the
    // certificate before the endpoint message goes out, and the device arrives as expected.
    let mut second_life = stack.module(&thing, stack.local.staging_port).await;
    let bought = stack.claim(&buyer, &thing).await;
    assert_eq!(bought.status, 202, "{:?}", bought.body);
    let bought_id = bought.body["claim_id"].as_str().unwrap().to_owned();
    wait_for_status(&cert, true).await;
    second_life.wait_for(Duration::from_secs(15), |e| *e == onboarded).await;
    stack
        .claim_until(&buyer, &bought_id, "provisioned", Duration::from_secs(20))
        .await;
    assert_eq!(recorded_switches(&stack, &cert), ["INACTIVE", "ACTIVE"]);
    let history = stack
        .admin(
            "GET",
            &format!("/v1/admin/devices/{thing}"),
            "arn:aws:iam::123456789012:user/ops",
            None,
        )
        .await;
    let events: Vec<&str> = history.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["event"].as_str())
        .collect();
    assert!(
        events.ends_with(&["quarantined", "claimed", "quarantine_lifted", "provisioned"]),
        "{events:?}"
    );
    assert!(history.body["quarantine"].is_null());
}
