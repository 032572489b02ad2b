//! The claim flow end to end on the running local stack (`scripts/dev.sh`): the app's HTTP calls go
//! to the functions served by `cargo lambda watch`, the claim-thing credentials come from Secrets
//! Manager (moto), the endpoint message crosses Mosquitto with mutual TLS, and a simulated
//! ExpressLink module receives it and moves to the OEM endpoint, and the IoT events of that arrival
//! (produced by the stack's `iot-events` bridge) complete the claim through `provisioning-events`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use claim_tests::{
    e2e::{delivered_history, Stack, DEMO_VENDOR},
    mqtt::Observer,
    pki,
};
use expresslink_sim::ModuleEvent;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_over_http_moves_the_module_to_the_oem_endpoint() {
    let stack = Stack::connect().await;
    // A user of this test only: the stack's table outlives test runs.
    let alice = format!("alice-{}", uuid::Uuid::new_v4().simple());
    let observer = Observer::start(&stack.pki, stack.local.staging_port).await.unwrap();
    let thing = stack.new_device(DEMO_VENDOR).await;
    let mut module = stack.module(&thing, stack.local.staging_port).await;

    let created = stack.claim(&alice, &thing).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();

    module
        .wait_for(Duration::from_secs(15), |e| {
            *e == ModuleEvent::ConnectedTo(stack.local.oem_endpoint.clone())
        })
        .await;
    // Two scheduled publisher runs later, still nothing more has been sent.
    module.settle(Duration::from_secs(5)).await;
    let expected = (
        format!("{thing}/expresslink_config"),
        format!("{{\"Endpoint\":\"{}\"}}", stack.local.oem_endpoint).into_bytes(),
    );
    assert_eq!(
        module.messages(),
        std::slice::from_ref(&expected),
        "exactly the message, on exactly its topic, once"
    );
    assert_eq!(
        observer.seen(&thing),
        [expected],
        "the broker carried one message for this device"
    );
    assert_eq!(
        module.seen[1..3],
        [
            ModuleEvent::Message {
                topic: format!("{thing}/expresslink_config"),
                payload: format!("{{\"Endpoint\":\"{}\"}}", stack.local.oem_endpoint).into_bytes(),
            },
            ModuleEvent::EndpointStored(stack.local.oem_endpoint.clone()),
        ]
    );

    // The module's arrival in the OEM account completes the claim.
    let read = stack
        .claim_until(&alice, &claim_id, "provisioned", Duration::from_secs(20))
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["state"], "provisioned", "{:?}", read.body);
    assert_eq!(read.body["failure"], serde_json::Value::Null);
    delivered_history(&read.body).unwrap();
    let devices = stack.call("GET", "/v1/devices", &alice, None).await;
    assert_eq!(devices.body["devices"][0]["thing_name"], thing.as_str());
    assert_eq!(devices.body["devices"][0]["state"], "provisioned");

    // Someone else's claim and device answer exactly like missing ones.
    let theirs = stack
        .call("GET", &format!("/v1/claims/{claim_id}"), "mallory", None)
        .await;
    let missing = stack
        .call("GET", &format!("/v1/claims/{}", uuid::Uuid::new_v4()), "mallory", None)
        .await;
    assert_eq!((theirs.status, missing.status), (404, 404));
    assert_eq!(theirs.body["error"]["code"], missing.body["error"]["code"]);
    assert_eq!(theirs.body["error"]["message"], missing.body["error"]["message"]);
    let device = stack
        .call("GET", &format!("/v1/devices/{thing}"), "mallory", None)
        .await;
    assert_eq!(device.status, 404);
    assert_eq!(device.body["error"]["code"], "device_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_claims_over_http_give_one_202_and_one_publish() {
    let stack = Arc::new(Stack::connect().await);
    let observer = Observer::start(&stack.pki, stack.local.staging_port).await.unwrap();
    let thing = stack.new_device(DEMO_VENDOR).await;
    let mut module = stack.module(&thing, stack.local.staging_port).await;

    let attempts = (0..20).map(|i| {
        let (stack, thing) = (Arc::clone(&stack), thing.clone());
        tokio::spawn(async move { stack.claim(&format!("racer-{i}"), &thing).await.status })
    });
    let mut statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    statuses.sort_unstable();
    let mut expected = vec![409; 19];
    expected.insert(0, 202);
    assert_eq!(statuses, expected);

    module
        .wait_for(Duration::from_secs(15), |e| matches!(e, ModuleEvent::EndpointStored(_)))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(observer.seen(&thing).len(), 1, "one publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_over_http_get_400_and_publish_nothing() {
    let stack = Stack::connect().await;
    let observer = Observer::start(&stack.pki, stack.local.staging_port).await.unwrap();
    // Every code below contains this token, so anything they could have published would show it.
    let token = format!("bad{}", uuid::Uuid::new_v4().simple());
    let one_mb = format!("{{\"code\":\"{}\"}}", "a".repeat(1024 * 1024)).into_bytes();
    // With label codes enabled (the stack sets LABEL_CODE_KEY_SECRET) `/`, `+` and `#` are
    // characters a printed code may have: such a code is only ever looked up by its keyed hash,
    // never put into a topic, so it is an unknown device (404) rather than a bad code.
    let mqtt_chars = if std::env::var("LABEL_CODE_KEY_SECRET").is_ok_and(|name| !name.is_empty()) {
        "device_not_found"
    } else {
        "invalid_code"
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"code\": ".to_vec(), "invalid_request"),
        (br#"{"code": 42}"#.to_vec(), "invalid_request"),
        (one_mb, "invalid_request"),
        ("x".repeat(10 * 1024).into_bytes(), "invalid_request"),
        (br#"{"code": ""}"#.to_vec(), "invalid_code"),
        (
            json!({ "code": format!("{token}/other") }).to_string().into_bytes(),
            mqtt_chars,
        ),
        (
            json!({ "code": format!("{token}+") }).to_string().into_bytes(),
            mqtt_chars,
        ),
        (
            json!({ "code": format!("{token}#") }).to_string().into_bytes(),
            mqtt_chars,
        ),
        (
            json!({ "code": format!("{token}\u{0}") }).to_string().into_bytes(),
            "invalid_code",
        ),
        (
            json!({ "code": format!("{token} x") }).to_string().into_bytes(),
            "invalid_code",
        ),
    ];
    for (body, code) in cases {
        let answer = stack.call("POST", "/v1/claims", "alice", Some(body)).await;
        let status = if code == "device_not_found" { 404 } else { 400 };
        assert_eq!(answer.status, status, "{:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], code);
        assert!(answer.body["error"]["request_id"].is_string());
    }
    // Bytes that are not UTF-8, sent as octet-stream: not JSON, 415. (Typed as JSON or untyped,
    // `cargo lambda watch` itself answers 500 before the function runs: see the hostile corpus;
    // the handler tests cover that event shape.)
    let raw = stack
        .http
        .post(format!("{}/v1/claims", stack.local.api_url))
        .header("x-local-user", "alice")
        .header("content-type", "application/octet-stream")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 415);
    let body: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    // A well-formed code that no device has: 404, and nothing published either.
    let unknown = stack.claim("alice", &token).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["error"]["code"], "device_not_found");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let leaked: Vec<_> = observer
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|(topic, _)| topic.contains(&token))
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "published: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_never_reach_the_logs() {
    let stack = Stack::connect().await;
    // A vendor whose secret is broken in a way that makes the publisher report on it.
    let marker = format!("SECRETMARKER{}", uuid::Uuid::new_v4().simple());
    let vendor = format!("leaky-{}", uuid::Uuid::new_v4().simple());
    let mut secret = claim_tests::local_claim_thing_secret(&stack.pki, stack.local.staging_port).unwrap();
    secret["private_key_pem"] = json!(format!(
        "-----BEGIN PRIVATE KEY-----\n{marker}\n-----END PRIVATE KEY-----\n"
    ));
    stack.put_secret(&vendor, &secret).await;
    let thing = stack.new_device(&vendor).await;
    let created = stack.claim("alice", &thing).await;
    assert_eq!(created.status, 202);
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    let failed = stack
        .wait_for_claim("alice", &claim_id, Duration::from_secs(10), |a| {
            a.body["failure"]["code"].is_string()
        })
        .await;
    assert_eq!(failed.body["state"], "pending", "a failed publish keeps the claim");
    assert_eq!(failed.body["failure"]["code"], "credentials_invalid");
    assert!(!failed.body.to_string().contains(&marker));

    // And a good publish with the real claim-thing key, so its use is in the log too.
    let good = stack.new_device(DEMO_VENDOR).await;
    assert_eq!(stack.claim("alice", &good).await.status, 202);

    let log = std::fs::read_to_string(&stack.local.api_log).unwrap();
    assert!(
        log.contains(&format!("\"claim_id\":\"{claim_id}\"")),
        "the log has this test's publish events (so it is the log the functions write)"
    );
    assert!(!log.contains(&marker), "a private key from a secret reached the log");
    let claim_thing = stack.pki.client(pki::CLAIM_THING).unwrap();
    for pem in [&claim_thing.key_pem, &claim_thing.cert_pem] {
        for line in pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 20) {
            assert!(
                !log.contains(line),
                "claim-thing key or certificate material reached the log"
            );
        }
    }
    assert!(!log.contains(&thing), "full label codes never reach the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resale_release_then_the_buyer_claims_the_factory_reset_product() {
    let stack = Stack::connect().await;
    let seller = format!("seller-{}", uuid::Uuid::new_v4().simple());
    let buyer = format!("buyer-{}", uuid::Uuid::new_v4().simple());
    let thing = stack.new_device(DEMO_VENDOR).await;
    let onboarded = ModuleEvent::ConnectedTo(stack.local.oem_endpoint.clone());
    let sold_id = stack.claim_and_onboard(&seller, &thing).await;

    // The buyer factory-resets the product: back in staging, same ThingName and certificate.
    let mut second_life = stack.module(&thing, stack.local.staging_port).await;
    let refused = stack.claim(&buyer, &thing).await;
    assert_eq!(refused.status, 409, "without a release: {:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "already_claimed");

    let released = stack
        .call("DELETE", &format!("/v1/devices/{thing}"), &seller, None)
        .await;
    assert_eq!(released.status, 204);
    let bought = stack.claim(&buyer, &thing).await;
    assert_eq!(bought.status, 202, "{:?}", bought.body);
    let bought_id = bought.body["claim_id"].as_str().unwrap().to_owned();
    second_life.wait_for(Duration::from_secs(15), |e| *e == onboarded).await;
    stack
        .claim_until(&buyer, &bought_id, "provisioned", Duration::from_secs(20))
        .await;
    let sellers = stack.call("GET", "/v1/devices", &seller, None).await;
    assert_eq!(sellers.body["devices"], json!([]), "the seller has no device any more");
    let old = stack.call("GET", &format!("/v1/claims/{sold_id}"), &seller, None).await;
    assert_eq!(old.body["state"], "released");
}
