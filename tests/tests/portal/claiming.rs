//! The happy path: a signed-in user claims a simulated module by typing its code, or through the QR
//! code's deep link, watches it reach `provisioned` and finds it under "My products".

use std::time::Duration;

use claim_tests::e2e::{Stack, DEMO_VENDOR};
use expresslink_sim::ModuleEvent;

use crate::{
    browser::{Browser, PATIENCE},
    check_screen, unique, DESKTOP, PHONE,
};

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
    // Where it will be used: the region hint chooses the OEM endpoint (the stack's rules send eu-*
    // to its eu-west-1 endpoint).
    browser.click("#region option[value='eu-west-1']").await;
    check_screen(&browser, "phone-2-code-from-qr").await;

    browser.click("#claim-button").await;
    browser
        .wait_attr("#progress", "data-state", "provisioned", PATIENCE)
        .await;
    check_screen(&browser, "phone-3-provisioned").await;
    let devices = stack.call("GET", "/v1/devices", &user, None).await;
    let endpoint = devices.body["devices"][0]["target_endpoint"]
        .as_str()
        .unwrap_or_default();
    assert!(
        endpoint.contains(".eu-west-1."),
        "the region hint was sent: {:?}",
        devices.body
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phone_scans_the_labels_qr_code_with_its_camera_and_claims_the_product() {
    let stack = Stack::connect().await;
    let thing = stack.new_device(DEMO_VENDOR).await;
    let _module = stack.module(&thing, stack.local.staging_port).await;
    // The camera sees the label's QR code: Chromium's fake capture device plays a video of it.
    let label = format!("{}/claim?code={thing}", stack.local.portal_url);
    let video = crate::qr_video::qr_video(&label, &std::env::temp_dir());
    let camera = [
        "--use-fake-ui-for-media-stream".to_owned(),
        "--use-fake-device-for-media-stream".to_owned(),
        format!("--use-file-for-fake-video-capture={}", video.display()),
    ];
    let browser = Browser::start_with(&stack.local.portal_url, PHONE.0, PHONE.1, &camera).await;
    browser.open("/").await;
    browser.sign_in(&unique("scanning-user")).await;
    // Chromium on Linux has no BarcodeDetector: this is the portal's own decoder (zxing-wasm).
    let native = browser
        .client
        .execute("return 'BarcodeDetector' in window;", vec![])
        .await
        .unwrap();
    assert_eq!(
        native,
        serde_json::Value::Bool(false),
        "the test would not reach the fallback decoder"
    );

    browser.click("#scan").await;
    let code = browser.find("#code").await;
    let started = std::time::Instant::now();
    while code.prop("value").await.unwrap().as_deref() != Some(thing.as_str()) {
        assert!(
            started.elapsed() < PATIENCE,
            "the scan did not fill in the code: {}",
            browser.page_text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_screen(&browser, "phone-scanned").await;
    browser.click("#claim-button").await;
    browser
        .wait_attr("#progress", "data-state", "provisioned", PATIENCE)
        .await;
    let _ = std::fs::remove_file(video);
}
