//! Endpoint selection on the running local stack: the functions run with `OEM_ENDPOINTS` (two OEM
//! endpoints; SKUs `EU-*` and region hints `eu-*` go to the second, see `scripts/dev.sh`). The
//! simulated module receives the endpoint the rules chose, the claim answers it as
//! `target_endpoint`, and the rule that chose it is on the claim (operators see it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use claim_tests::e2e::{Stack, DEMO_VENDOR};
use expresslink_sim::ModuleEvent;
use serde_json::json;

/// Claims a new device of `sku` (with `region` as the app's hint) and returns what the module
/// received, the claim's `target_endpoint` and the rule operators see.
async fn claim_and_receive(stack: &Stack, sku: &str, region: Option<&str>) -> (String, String, String) {
    let thing = stack.new_device_with_sku(DEMO_VENDOR, sku).await;
    let mut module = stack.module(&thing, stack.local.staging_port).await;
    let user = format!("sel-{}", uuid::Uuid::new_v4().simple());
    let mut body = json!({ "code": thing });
    if let Some(region) = region {
        body["region"] = json!(region);
    }
    let created = stack
        .call("POST", "/v1/claims", &user, Some(body.to_string().into_bytes()))
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    module
        .wait_for(Duration::from_secs(15), |e| matches!(e, ModuleEvent::EndpointStored(_)))
        .await;
    let received = module
        .seen
        .iter()
        .find_map(|e| match e {
            ModuleEvent::EndpointStored(host) => Some(host.clone()),
            _ => None,
        })
        .unwrap();
    let inspected = stack
        .admin(
            "GET",
            &format!("/v1/admin/devices/{thing}"),
            "arn:aws:iam::123456789012:user/selection-test",
            None,
        )
        .await;
    (
        received,
        created.body["target_endpoint"].as_str().unwrap().to_owned(),
        inspected.body["claim"]["target_rule"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sku_and_region_rules_pick_the_endpoint_the_module_receives() {
    let stack = Stack::connect().await;
    let plan = stack
        .local
        .oem_endpoints
        .clone()
        .expect("the local stack runs with OEM_ENDPOINTS (scripts/dev.sh)");
    let eu = plan.select(Some("EU-1"), None).host;
    assert_ne!(eu, stack.local.oem_endpoint, "the stack's rules have a second endpoint");

    let (received, answered, rule) = claim_and_receive(&stack, "EU-PRO", None).await;
    assert_eq!((received.as_str(), answered.as_str()), (eu.as_str(), eu.as_str()));
    assert_eq!(rule, "rules[0] sku=EU-*");

    let (received, answered, rule) = claim_and_receive(&stack, "E2E", Some("eu-west-1")).await;
    assert_eq!((received.as_str(), answered.as_str()), (eu.as_str(), eu.as_str()));
    assert_eq!(rule, "rules[1] region=eu-*");

    let (received, answered, rule) = claim_and_receive(&stack, "E2E", Some("us-west-2")).await;
    let default = stack.local.oem_endpoint.as_str();
    assert_eq!((received.as_str(), answered.as_str()), (default, default));
    assert_eq!(rule, "default");
}
