//! The registration portal (`portal/`, docs/portal.md) in a real browser: headless Chromium from
//! Debian, driven through chromedriver, against the running local stack (`scripts/dev.sh` serves the
//! portal's local build and starts everything else). Each test uses devices, users and vendors of its
//! own, signs in with the local-only sign-in, checks what a buyer sees for each outcome, runs axe-core
//! on every screen it reaches (no serious or critical violations) and writes screenshots to
//! `.local/artefacts/portal/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod bundle;
mod claiming;
mod outcomes;
mod products;
mod qr_video;

use browser::Browser;
use claim_tests::e2e::Stack;

/// A desktop window and a small phone's (360 CSS pixels wide).
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (360, 780);

pub async fn browser(stack: &Stack, (width, height): (u32, u32)) -> Browser {
    Browser::start(&stack.local.portal_url, width, height).await
}

/// A user of this test only (the stack's table outlives test runs).
pub fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// The screen as it is now passes axe-core (no serious or critical violations) and, in a phone's
/// window, fits its width; then its screenshot is saved as `name`.
pub async fn check_screen(browser: &Browser, name: &str) {
    let violations = browser.serious_accessibility_violations().await;
    assert!(violations.is_empty(), "{name}: axe-core found {violations:#?}");
    let (fits, measured) = browser.fits_width().await;
    assert!(fits, "{name}: the page is wider than the window: {measured}");
    browser.screenshot(name).await;
}
