//! Every other outcome of a claim shows its message and the next step: someone else's device, an
//! unknown code, a rate-limited user, a publish that fails (the staging endpoint down) and a claim
//! that expired.

use std::time::Duration;

use claim_tests::{
    e2e::{Stack, DEMO_VENDOR},
    mqtt::PrivateBroker,
};
use expresslink_sim::ModuleEvent;

use crate::{browser::PATIENCE, check_screen, unique, DESKTOP, PHONE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_device_an_unknown_code_and_too_many_attempts_each_say_what_to_do() {
    let stack = Stack::connect().await;
    let thing = stack.new_device(DEMO_VENDOR).await;
    let holder = stack.claim(&unique("holder"), &thing).await;
    assert_eq!(holder.status, 202, "{:?}", holder.body);
    let user = unique("second-user");
    // Failed claims count in fixed windows (docs/api.md): start with at least two minutes of one left.
    let mut window = rate_window(&stack, &thing, &user).await;
    let left = window_left(&window);
    if left < Duration::from_secs(120) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
        window = rate_window(&stack, &thing, &user).await;
    }
    let browser = crate::browser(&stack, PHONE).await;
    browser.open("/").await;
    browser.sign_in(&user).await;

    browser.claim(&thing).await;
    let said = browser
        .wait_text("#result [role=alert]", "already registered to someone else")
        .await;
    assert!(said.contains("release it"), "the next step: {said}");
    check_screen(&browser, "already-claimed").await;

    browser
        .claim(&format!("no-such-{}", uuid::Uuid::new_v4().simple()))
        .await;
    browser.wait_text("#result [role=alert]", "Check the label").await;
    browser.find("#code[aria-invalid='true']").await;
    check_screen(&browser, "unknown-code").await;

    // Use up the user's failed attempts over HTTP.
    let inspected = stack
        .admin("GET", &format!("/v1/admin/devices/{thing}?user={user}"), OPERATOR, None)
        .await;
    let limit = inspected.body["rate_limit"]["limit_per_user"].as_u64().unwrap();
    let used = inspected.body["rate_limit"]["failed_attempts_by_user"]
        .as_u64()
        .unwrap();
    assert_eq!(
        inspected.body["rate_limit"]["window_ends_at"], window,
        "all in one window"
    );
    for i in used..limit {
        let wrong = stack.claim(&user, &format!("wrong-{i}")).await;
        assert_eq!(wrong.status, 404, "{:?}", wrong.body);
    }
    browser.claim(&thing).await;
    let said = browser.wait_text("#result [role=alert]", "Too many attempts").await;
    assert!(
        said.contains("minutes") || said.contains("seconds"),
        "the wait, in words: {said}"
    );
    check_screen(&browser, "rate-limited").await;
}

const OPERATOR: &str = "arn:aws:iam::123456789012:user/portal-test";

/// The end of the current counting window of failed claims (the admin inspection with `?user=`).
async fn rate_window(stack: &Stack, thing: &str, user: &str) -> serde_json::Value {
    let inspected = stack
        .admin("GET", &format!("/v1/admin/devices/{thing}?user={user}"), OPERATOR, None)
        .await;
    inspected.body["rate_limit"]["window_ends_at"].clone()
}

fn window_left(window: &serde_json::Value) -> Duration {
    let ends = window.as_str().unwrap();
    let ends = time::OffsetDateTime::parse(ends, &time::format_description::well_known::Rfc3339).unwrap();
    Duration::try_from(ends - time::OffsetDateTime::now_utc()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publish_that_fails_says_so_offers_a_retry_and_completes_when_the_endpoint_returns() {
    let stack = Stack::connect().await;
    let mut broker = PrivateBroker::start(&stack.pki, &stack.local.staging_acl()).unwrap();
    let vendor = stack.new_vendor(broker.port).await;
    let thing = stack.new_device(&vendor).await;
    let mut module = stack.module(&thing, broker.port).await;
    let browser = crate::browser(&stack, DESKTOP).await;
    browser.open("/").await;
    let user = unique("patient-user");
    browser.sign_in(&user).await;

    broker.stop();
    browser.claim(&thing).await;
    browser
        .wait_attr("#progress", "data-failure", "staging_unreachable", PATIENCE)
        .await;
    let said = browser.wait_text("#progress-message", "could not reach").await;
    assert!(said.contains("keep trying"), "{said}");
    browser.find("#retry").await;
    check_screen(&browser, "publish-failed").await;

    broker.resume().unwrap();
    module
        .wait_for_next(Duration::from_secs(10), |e| *e == ModuleEvent::WaitingInStaging)
        .await;
    // The schedule delivers on its own; the user's retry (at least 10 s after the last attempt,
    // docs/api.md) may come first. Either way the screen follows the claim to the end. A message
    // the schedule sent in the moment between the broker's return and the module's new
    // subscription is lost (as on AWS IoT: no session keeps it) and the claim reads
    // `endpoint_published`, which offers no retry on screen: the app's retry (`POST .../retry`,
    // allowed for a live claim) sends it again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    if let Ok(retry) = browser.client.find(fantoccini::Locator::Css("#retry")).await {
        let _ = retry.click().await;
    } else {
        let devices = stack.call("GET", "/v1/devices", &user, None).await;
        let claim_id = devices.body["devices"][0]["claim_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for _ in 0..4 {
            module.settle(Duration::from_millis(200)).await;
            if !module.messages().is_empty() {
                break;
            }
            // `429` while the last attempt is under 10 s old.
            let retried = stack
                .call("POST", &format!("/v1/claims/{claim_id}/retry"), &user, None)
                .await;
            if retried.status == 202 || retried.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    browser
        .wait_attr("#progress", "data-state", "provisioned", Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_claim_says_to_power_cycle_and_try_again_and_the_retry_completes_it() {
    let stack = Stack::connect().await;
    let thing = stack.new_device(DEMO_VENDOR).await;
    let user = unique("late-user");
    let browser = crate::browser(&stack, DESKTOP).await;
    browser.open("/").await;
    browser.sign_in(&user).await;

    // The product is switched off: the message reaches the staging endpoint, the product never
    // arrives, and its 15 minutes pass.
    browser.claim(&thing).await;
    browser
        .wait_attr("#progress", "data-state", "endpoint_published", PATIENCE)
        .await;
    let devices = stack.call("GET", "/v1/devices", &user, None).await;
    let claim_id = devices.body["devices"][0]["claim_id"].as_str().unwrap().to_owned();
    stack.let_claim_expire(&claim_id, &thing).await;
    browser.wait_attr("#progress", "data-state", "expired", PATIENCE).await;
    let said = browser.wait_text("#progress-message", "Power-cycle").await;
    assert!(said.contains("try again"), "{said}");
    check_screen(&browser, "expired").await;

    // Switched on again, it waits in staging; "Try again" renews the claim and it arrives.
    let _module = stack.module(&thing, stack.local.staging_port).await;
    browser.click("#retry").await;
    browser
        .wait_attr("#progress", "data-state", "provisioned", PATIENCE)
        .await;
}
