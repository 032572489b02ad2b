//! "My products": release with a confirmation (resale), after which someone else can claim the device.

use claim_tests::e2e::{Stack, DEMO_VENDOR};

use crate::{browser::PATIENCE, check_screen, unique, DESKTOP};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releasing_asks_first_and_then_someone_else_can_claim_the_device() {
    let stack = Stack::connect().await;
    let thing = stack.new_device(DEMO_VENDOR).await;
    let seller = unique("seller");
    stack.claim_and_onboard(&seller, &thing).await;
    let browser = crate::browser(&stack, DESKTOP).await;
    browser.open("/products").await;
    browser.sign_in(&seller).await;
    let item = format!("li.product[data-thing='{thing}']");
    browser.wait_attr(&item, "data-state", "provisioned", PATIENCE).await;

    // Cancel keeps it.
    browser.click(&format!("{item} button.release")).await;
    browser.find("#release-dialog[open]").await;
    browser.click("#release-cancel").await;
    browser.find(&item).await;
    assert_eq!(
        stack
            .call("GET", &format!("/v1/devices/{thing}"), &seller, None)
            .await
            .status,
        200
    );

    browser.click(&format!("{item} button.release")).await;
    let asked = browser.text("#release-dialog").await;
    assert!(
        asked.contains(&thing) && asked.contains("no longer be registered to you"),
        "{asked}"
    );
    check_screen(&browser, "06-release-confirm").await;
    browser.click("#release-confirm").await;
    browser.wait_text("#result [role=status]", "was released").await;
    assert!(
        browser.client.find(fantoccini::Locator::Css(&item)).await.is_err(),
        "gone from the list"
    );
    check_screen(&browser, "07-released").await;

    let seller_view = stack.call("GET", &format!("/v1/devices/{thing}"), &seller, None).await;
    assert_eq!(seller_view.status, 404);
    let buyer = stack.claim(&unique("buyer"), &thing).await;
    assert_eq!(buyer.status, 202, "claimable by someone else: {:?}", buyer.body);
}
