//! The happy path: a signed-in user claims a simulated module by typing its code, or through the QR
//! code's deep link, watches it reach `provisioned` and finds it under "My products".

use std::time::Duration;

use claim_tests::e2e::{Stack, DEMO_VENDOR};
use expresslink_sim::ModuleEvent;

use crate::{browser::PATIENCE, check_screen, unique, DESKTOP, PHONE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_types_the_code_watches_the_product_arrive_and_finds_it_under_my_products() {
    let stack = Stack::connect().await;
    let thing = stack.new_device(DEMO_VENDOR).await;
    let mut module = stack.module(&thing, stack.local.staging_port).await;
    let browser = crate::browser(&stack, DESKTOP).await;
    let user = unique("portal-user");

    browser.open("/").await;
    browser.find("#local-sign-in-form").await;
    check_screen(&browser, "01-sign-in").await;
    browser.sign_in(&user).await;
    browser.find("#claim-form").await;
    check_screen(&browser, "02-claim-form").await;

    browser.claim(&thing).await;
    browser.find("#progress[data-state]").await;
    let first = browser.text("#progress-message").await;
    assert!(
        first.contains("reserved for you") || first.contains("moving to") || first.contains("Done"),
        "{first}"
    );
    check_screen(&browser, "03-progress").await;

    module
        .wait_for(Duration::from_secs(15), |e| {
            *e == ModuleEvent::ConnectedTo(stack.local.oem_endpoint.clone())
        })
        .await;
    browser
        .wait_attr("#progress", "data-state", "provisioned", PATIENCE)
        .await;
    assert!(browser.text("#progress-message").await.contains("connected to"));
    check_screen(&browser, "04-provisioned").await;

    browser.click("#to-products").await;
    let item = format!("li.product[data-thing='{thing}']");
    browser.wait_attr(&item, "data-state", "provisioned", PATIENCE).await;
    assert!(browser.text(&item).await.contains("Connected"));
    check_screen(&browser, "05-my-products").await;

    // What the browser showed is what the API holds.
    let devices = stack.call("GET", "/v1/devices", &user, None).await;
    assert_eq!(devices.body["devices"][0]["thing_name"], thing.as_str());
    assert_eq!(devices.body["devices"][0]["state"], "provisioned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qr_deep_link_on_a_phone_carries_the_code_through_sign_in_to_provisioned() {
    let stack = Stack::connect().await;
    let thing = stack.new_device(DEMO_VENDOR).await;
    let _module = stack.module(&thing, stack.local.staging_port).await;
    let browser = crate::browser(&stack, PHONE).await;
    let user = unique("phone-user");

    // What the QR code on the label holds (docs/portal.md): the portal's claim URL with the code.
    browser.open(&format!("/claim?code={thing}")).await;
    browser.find("#local-sign-in-form").await;
    assert_eq!(browser.viewport().await["viewport"], PHONE.0, "a phone's width");
    check_screen(&browser, "phone-1-sign-in").await;
    browser.sign_in(&user).await;
    let code = browser.find("#code").await;
    assert_eq!(code.prop("value").await.unwrap().as_deref(), Some(thing.as_str()));
    check_screen(&browser, "phone-2-code-from-qr").await;

    browser.click("#claim-button").await;
    browser
        .wait_attr("#progress", "data-state", "provisioned", PATIENCE)
        .await;
    check_screen(&browser, "phone-3-provisioned").await;
    browser.click("#to-products").await;
    browser
        .wait_attr(
            &format!("li.product[data-thing='{thing}']"),
            "data-state",
            "provisioned",
            PATIENCE,
        )
        .await;
    check_screen(&browser, "phone-4-my-products").await;
}
