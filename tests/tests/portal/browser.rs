//! A real browser for the portal's tests: Debian's headless Chromium, driven through its
//! chromedriver (WebDriver) with `fantoccini`. Each test gets a chromedriver of its own on a free
//! port and a fresh profile, both removed when it ends.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Chromium's flags for this machine: headless, no sandbox (root in CI), and nothing that talks to
/// the internet on its own (the tests run without it).
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long a screen may take to show what a test waits for (a claim reaches `provisioned` in a
/// few seconds on the local stack; the schedule runs every 2 s).
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    pub portal: String,
    driver: Child,
    profile: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the screenshots go (`.local/artefacts/portal/`); CI keeps them as artefacts.
pub fn artefacts() -> PathBuf {
    workspace_root().join(".local/artefacts/portal")
}

impl Browser {
    /// A fresh headless Chromium with a viewport of `width` × `height` CSS pixels.
    pub async fn start(portal: &str, width: u32, height: u32) -> Self {
        Self::start_with(portal, width, height, &[]).await
    }

    /// The same, with more Chromium flags (`extra`).
    pub async fn start_with(portal: &str, width: u32, height: u32, extra: &[String]) -> Self {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = claim_tests::engines::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            // A process group of its own: the test ends chromedriver and its Chromium together.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("{chromedriver}: {err} (scripts/dev.sh test installs chromium and chromium-driver)")
            });
        let profile = std::env::temp_dir().join(format!("portal-test-{}", uuid::Uuid::new_v4().simple()));
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={},{}", width.max(800), height));
        args.extend_from_slice(extra);
        // The viewport exactly as asked (a window is at least 500 pixels wide): narrower than 600 is
        // a phone's, with touch.
        let phone = width < 600;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                "mobileEmulation": { "deviceMetrics": {
                    "width": width, "height": height, "pixelRatio": 1.0, "mobile": phone, "touch": phone,
                } },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            match builder.capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(err) if started.elapsed() > Duration::from_secs(20) => panic!("chromedriver on {url}: {err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Self {
            client,
            portal: portal.trim_end_matches('/').to_owned(),
            driver,
            profile,
        }
    }

    /// Opens `path` (with its query) of the portal.
    pub async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.portal);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|err| panic!("{url}: {err} (is the local stack up? scripts/dev.sh up)"));
    }

    /// The element `css` once it is there and shown; fails the test with the page's text if it is
    /// not within [`PATIENCE`].
    pub async fn find(&self, css: &str) -> Element {
        self.find_within(css, PATIENCE).await
    }

    pub async fn find_within(&self, css: &str, within: Duration) -> Element {
        self.poll(within, &format!("{css} to show"), async || {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.is_displayed().await.unwrap_or(false).then_some(element)
        })
        .await
    }

    /// Waits until the attribute `name` of `css` reads `value`.
    pub async fn wait_attr(&self, css: &str, name: &str, value: &str, within: Duration) {
        self.poll(within, &format!("{css}[{name}] to read {value:?}"), async || {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            (element.attr(name).await.ok().flatten()?.as_str() == value).then_some(())
        })
        .await;
    }

    /// Waits until `css` shows a text containing `wanted`, and returns that text.
    pub async fn wait_text(&self, css: &str, wanted: &str) -> String {
        self.poll(PATIENCE, &format!("{css} to say {wanted:?}"), async || {
            let text = self.client.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
            text.contains(wanted).then_some(text)
        })
        .await
    }

    /// Asks `probe` every 200 ms until it answers; fails the test with what the page says if it does
    /// not within `within`.
    async fn poll<T>(&self, within: Duration, waiting_for: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if started.elapsed() > within {
                panic!(
                    "waited {within:?} for {waiting_for}; the page says: {}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(err) => format!("(no page: {err})"),
        }
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element.click().await.unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element.clear().await.unwrap_or_else(|err| panic!("clear {css}: {err}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    /// The local-only sign-in, as `user` (the local build's form; docs/portal.md).
    pub async fn sign_in(&self, user: &str) {
        self.type_into("#local-name", user).await;
        self.click("#local-sign-in").await;
        self.find("nav #sign-out").await;
    }

    /// Types `code` into the claim form and submits it.
    pub async fn claim(&self, code: &str) {
        self.type_into("#code", code).await;
        self.click("#claim-button").await;
    }

    /// Saves what the browser shows as `.local/artefacts/portal/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|err| panic!("screenshot {name}: {err}"));
        let dir = artefacts();
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
        let file = dir.join(format!("{name}.png"));
        std::fs::write(&file, png).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
    }

    /// axe-core's violations of impact `serious` or `critical` on the page as it is now (rule id,
    /// impact, and the elements), run from the portal's own copy of axe-core (`portal/node_modules`).
    pub async fn serious_accessibility_violations(&self) -> Vec<Value> {
        let axe = workspace_root().join("portal/node_modules/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&axe).unwrap_or_else(|err| {
            panic!(
                "{}: {err} (scripts/dev.sh installs the portal's packages)",
                axe.display()
            )
        });
        self.client
            .execute(&source, vec![])
            .await
            .unwrap_or_else(|err| panic!("loading axe-core: {err}"));
        let run = r#"
            const done = arguments[arguments.length - 1];
            axe.run(document, { resultTypes: ["violations"] })
              .then((r) => done({ passed: r.passes.length, violations: r.violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")) })) }))
              .catch((e) => done({ passed: 0, error: String(e) }));
        "#;
        let result = self
            .client
            .execute_async(run, vec![])
            .await
            .unwrap_or_else(|err| panic!("axe-core run: {err}"));
        // Rules that passed: proof that axe-core looked at the page at all.
        assert!(
            result["passed"].as_u64() > Some(0),
            "axe-core checked nothing: {result}"
        );
        match &result["violations"] {
            Value::Array(violations) => violations.clone(),
            _ => panic!("axe-core run: {result}"),
        }
    }

    /// Whether the page fits the viewport's width (no sideways scrolling), with both widths.
    pub async fn fits_width(&self) -> (bool, Value) {
        let measured = self.viewport().await;
        let fits = measured["content"].as_u64() <= measured["viewport"].as_u64();
        (fits, measured)
    }

    /// The viewport's width and the page's (`viewport`, `content`), in CSS pixels.
    pub async fn viewport(&self) -> Value {
        self.client
            .execute(
                "return { viewport: window.innerWidth, content: document.documentElement.scrollWidth };",
                vec![],
            )
            .await
            .unwrap_or_else(|err| panic!("measuring the page: {err}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started, by their process group (the session needs no
        // closing: the browser is gone with it).
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
