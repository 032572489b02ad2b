//! Lifecycle events as the OEM's other systems receive them: from the table's change stream
//! (`local-streams` playing the event source mapping) through `lifecycle-events` onto the bus in
//! moto, into a sink queue of the test's own. Each event matches `docs/events.md`'s schema, each
//! committed change is one event with its own stable id, and a change that did not commit (a
//! refused claim) is none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use claim_tests::{
    e2e::{Stack, DEMO_VENDOR},
    lifecycle::{self, EventSink},
};
use serde_json::{json, Value};

/// The JSON Schema of `detail` from `docs/events.md` (the ```json block under "## Schema").
fn detail_schema() -> jsonschema::Validator {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md")).unwrap();
    let section = doc
        .split("\n## Schema\n")
        .nth(1)
        .expect("docs/events.md has a Schema section");
    let block = section
        .split("```json\n")
        .nth(1)
        .unwrap()
        .split("\n```")
        .next()
        .unwrap();
    let schema: Value = serde_json::from_str(block).expect("the schema block is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid JSON Schema")
}

fn assert_valid(schema: &jsonschema::Validator, event: &Value) {
    assert_eq!(event["source"], lifecycle::SOURCE, "{event}");
    assert_eq!(event["detail-type"], event["detail"]["type"], "{event}");
    let errors: Vec<String> = schema.iter_errors(&event["detail"]).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?} in {event}");
}

async fn sink_for(things: &[&str]) -> EventSink {
    let name = format!("lc-{}", uuid::Uuid::new_v4().simple());
    EventSink::create(&name, json!({ "thing_name": things })).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claims_life_is_one_event_per_committed_change_and_a_refused_claim_is_none() {
    let stack = Stack::connect().await;
    let schema = detail_schema();
    let user = format!("events-{}", uuid::Uuid::new_v4().simple());
    let thing = stack.new_device(DEMO_VENDOR).await;
    let sink = sink_for(&[&thing]).await;

    let claim_id = stack.claim_and_onboard(&user, &thing).await;
    let refused = stack.claim("someone-else", &thing).await;
    assert_eq!(refused.body["error"]["code"], "already_claimed");
    let released = stack.call("DELETE", &format!("/v1/devices/{thing}"), &user, None).await;
    assert_eq!(released.status, 204);

    let events = sink
        .collect_until(Duration::from_secs(20), |events| {
            lifecycle::types(events).contains(&"device.released".to_owned())
        })
        .await;
    let types = lifecycle::types(&events);
    for event in &events {
        assert_valid(&schema, event);
    }
    // endpoint_published may be missing: a module can arrive before the publish is recorded, and
    // then the claim goes straight to provisioned (docs/operations.md, funnel).
    let expected: Vec<&str> = [
        "claim.accepted",
        "claim.endpoint_published",
        "claim.provisioned",
        "device.released",
    ]
    .into_iter()
    .filter(|kind| *kind != "claim.endpoint_published" || types.iter().any(|t| t == kind))
    .collect();
    assert_eq!(types, expected, "in the device's order, nothing else: {events:#?}");
    for event in &events {
        let detail = &event["detail"];
        assert_eq!(detail["thing_name"], thing.as_str());
        assert_eq!(detail["vendor"], DEMO_VENDOR);
        assert_eq!(detail["claim_id"], claim_id.as_str());
        assert_eq!(
            detail["user"],
            user.as_str(),
            "the claim's user, never someone-else: {detail}"
        );
        assert_eq!(
            event["time"].as_str().map(|t| &t[..16]),
            detail["at"].as_str().map(|t| &t[..16])
        );
    }
    // The publish comes from the claim's own record (one write of the claim), the others from the
    // device's history.
    for event in &events {
        let id = event["detail"]["event_id"].as_str().unwrap_or_default();
        let expected = if event["detail-type"] == "claim.endpoint_published" {
            format!("{claim_id}/claim/")
        } else {
            format!("{thing}/history/")
        };
        assert!(id.starts_with(&expected), "{id} for {event}");
    }
    let accepted = &events[0]["detail"];
    assert_eq!(accepted["target_endpoint"], stack.local.oem_endpoint.as_str());
    assert_eq!(accepted["actor"], json!({"kind": "user", "id": user}));
    let ids: BTreeSet<&str> = events.iter().filter_map(|e| e["detail"]["event_id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "each change has its own id");

    // Nothing more arrives: the refused claim changed nothing, so it is no event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.take().await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_publish_is_an_event_with_its_error_code_and_attempt() {
    let stack = Stack::connect().await;
    let schema = detail_schema();
    let vendor = format!("broken-{}", uuid::Uuid::new_v4().simple());
    let mut secret = claim_tests::local_claim_thing_secret(&stack.pki, stack.local.staging_port).unwrap();
    secret["private_key_pem"] = json!("");
    stack.put_secret(&vendor, &secret).await;
    let thing = stack.new_device(&vendor).await;
    let sink = sink_for(&[&thing]).await;
    let created = stack.claim("alice", &thing).await;
    assert_eq!(created.status, 202, "{:?}", created.body);

    let events = sink
        .collect_until(Duration::from_secs(20), |events| {
            lifecycle::types(events).contains(&"claim.publish_failed".to_owned())
        })
        .await;
    for event in &events {
        assert_valid(&schema, event);
    }
    let failed = events
        .iter()
        .find(|event| event["detail-type"] == "claim.publish_failed")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(failed["detail"]["error_code"], "credentials_invalid");
    assert_eq!(failed["detail"]["attempt"], 1);
    assert_eq!(failed["detail"]["vendor"], vendor.as_str());
    assert_eq!(lifecycle::types(&events)[0], "claim.accepted");
}
