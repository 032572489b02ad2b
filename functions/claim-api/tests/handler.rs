//! The claim API handler, driven by API Gateway events built from captured REST API (Cognito user
//! pool authorizer) and HTTP API (JWT authorizer) fixtures, against DynamoDB Local. The publish
//! side is an in-memory recorder here; the end-to-end tests (`tests/tests/end_to_end/`) cover it
//! with the real broker, Secrets Manager (moto) and the served functions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use claim_api::ApiConfig;
use std::sync::Arc;

use claim_shared::domain::{history::Actor, registry::NewDevice};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use support::{assert_error, fixture, fixture_with, fixture_with_label_codes, unhurried, Call, Shape, ALICE, ENDPOINT};

#[tokio::test]
async fn a_full_claim_through_both_payload_shapes() {
    for shape in [Shape::Rest, Shape::Http] {
        let fx = fixture().await;
        fx.import("dev-full").await;

        let created = fx.send(&Call::claim(ALICE, "dev-full"), shape).await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{shape:?}: {:?}", created.body);
        let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
        assert_eq!(
            created.headers.get("location").unwrap(),
            &format!("/v1/claims/{claim_id}")
        );
        assert!(created.headers.contains_key("x-request-id"));
        // The endpoint message went out before the answer.
        assert_eq!(created.body["state"], "endpoint_published");
        assert_eq!(
            *fx.published.0.lock().unwrap(),
            [(
                "dev-full/expresslink_config".to_owned(),
                format!("{{\"Endpoint\":\"{ENDPOINT}\"}}")
            )]
        );
        assert_eq!(created.body["thing_name"], "dev-full");
        assert_eq!(created.body["target_endpoint"], ENDPOINT);
        assert_eq!(created.body["created_at"], "2026-03-01T12:00:00Z");
        assert_eq!(created.body["expires_at"], "2026-03-01T12:15:00Z");

        let read = fx
            .send(&Call::new("GET", &format!("/v1/claims/{claim_id}"), ALICE), shape)
            .await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.body["claim_id"], claim_id.as_str());
        assert_eq!(
            read.body["history"],
            json!([
                {"state": "pending", "at": "2026-03-01T12:00:00Z"},
                {"state": "endpoint_published", "at": "2026-03-01T12:00:00Z"}
            ])
        );
        assert_eq!(read.body["failure"], Value::Null);

        let again = fx.send(&Call::claim(ALICE, "dev-full"), shape).await;
        assert_eq!(again.status, StatusCode::OK, "the same user again gets the live claim");
        assert_eq!(again.body["claim_id"], claim_id.as_str());

        let list = fx.send(&Call::new("GET", "/v1/devices", ALICE), shape).await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(
            list.body,
            json!({"devices": [{
                "thing_name": "dev-full", "state": "endpoint_published", "claim_id": claim_id,
                "claimed_at": "2026-03-01T12:00:00Z", "target_endpoint": ENDPOINT, "sku": "KETTLE-2"
            }], "next_token": null})
        );
        let device = fx.send(&Call::new("GET", "/v1/devices/dev-full", ALICE), shape).await;
        assert_eq!(device.status, StatusCode::OK);
        assert_eq!(device.body["history"][1]["state"], "endpoint_published");

        let release = fx
            .send(&Call::new("DELETE", "/v1/devices/dev-full", ALICE), shape)
            .await;
        assert_error(&release, StatusCode::CONFLICT, "conflict");

        fx.clock.advance(time::Duration::minutes(15));
        let expired = fx
            .send(&Call::new("GET", &format!("/v1/claims/{claim_id}"), ALICE), shape)
            .await;
        assert_eq!(expired.body["state"], "expired");
        let list = fx.send(&Call::new("GET", "/v1/devices", ALICE), shape).await;
        assert_eq!(list.body["devices"], json!([]));
    }
}

#[tokio::test]
async fn an_owned_device_is_released_with_204() {
    let fx = fixture().await;
    fx.import("dev-own").await;
    let created = fx.send(&Call::claim(ALICE, "dev-own"), Shape::Http).await;
    let claim_id = claim_shared::domain::ids::ClaimId::parse(created.body["claim_id"].as_str().unwrap()).unwrap();
    fx.api.service.mark_provisioned(&claim_id).await.unwrap();

    let device = fx
        .send(&Call::new("GET", "/v1/devices/dev-own", ALICE), Shape::Http)
        .await;
    assert_eq!(device.body["state"], "provisioned");
    let states: Vec<&str> = device.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "endpoint_published", "provisioned"]);

    let other = fx
        .send(&Call::new("DELETE", "/v1/devices/dev-own", "someone-else"), Shape::Http)
        .await;
    assert_error(&other, StatusCode::NOT_FOUND, "device_not_found");
    let released = fx
        .send(&Call::new("DELETE", "/v1/devices/dev-own", ALICE), Shape::Http)
        .await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    assert!(released.headers.contains_key("x-request-id"));
    let bob = fx.send(&Call::claim("bob", "dev-own"), Shape::Http).await;
    assert_eq!(bob.status, StatusCode::ACCEPTED);
}

// Only meaningful for the build that ships: with `local-auth` the header names the caller.
#[cfg(not(feature = "local-auth"))]
#[tokio::test]
async fn no_authenticated_caller_is_401() {
    let fx = fixture().await;
    fx.import("dev-auth").await;
    for shape in [Shape::Rest, Shape::Http] {
        let mut call = Call::claim(ALICE, "dev-auth");
        call.user = None;
        // A user named in a header or the body does not count.
        call.headers.push(("x-local-user", ALICE));
        let answer = fx.send(&call, shape).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(fx.history_len("dev-auth").await, 1, "nothing was written");
}

#[tokio::test]
async fn other_users_claims_and_devices_look_exactly_like_missing_ones() {
    let fx = fixture().await;
    fx.import("dev-priv").await;
    let created = fx.send(&Call::claim(ALICE, "dev-priv"), Shape::Rest).await;
    let claim_path = format!("/v1/claims/{}", created.body["claim_id"].as_str().unwrap());
    let missing_claim = format!("/v1/claims/{}", uuid::Uuid::new_v4());

    let pairs = [
        (claim_path.as_str(), missing_claim.as_str(), "claim_not_found"),
        ("/v1/devices/dev-priv", "/v1/devices/no-such-dev", "device_not_found"),
        ("/v1/devices/dev-priv", "/v1/devices/bad%2Fcode", "device_not_found"),
    ];
    for (theirs, missing, code) in pairs {
        let a = fx.send(&Call::new("GET", theirs, "mallory"), Shape::Rest).await;
        let b = fx.send(&Call::new("GET", missing, "mallory"), Shape::Rest).await;
        assert_error(&a, StatusCode::NOT_FOUND, code);
        assert_error(&b, StatusCode::NOT_FOUND, code);
        let strip = |v: &Value| {
            let mut v = v.clone();
            v["error"]["request_id"] = Value::Null;
            v
        };
        assert_eq!(strip(&a.body), strip(&b.body), "{theirs} vs {missing}");
    }
    let other = fx.send(&Call::new("GET", "/v1/devices", "mallory"), Shape::Rest).await;
    assert_eq!(other.body["devices"], json!([]));
}

#[tokio::test]
async fn bad_input_gets_a_clear_400_and_changes_nothing() {
    let fx = fixture().await;
    fx.import("dev-bad").await;
    let long_text = "x".repeat(10 * 1024);
    let one_mb = format!("{{\"code\":\"{}\"}}", "a".repeat(1024 * 1024));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed JSON", b"{\"code\": \"dev-bad\"".to_vec(), "invalid_request"),
        ("not an object", b"[\"dev-bad\"]".to_vec(), "invalid_request"),
        ("code is a number", br#"{"code": 12}"#.to_vec(), "invalid_request"),
        ("code is null", br#"{"code": null}"#.to_vec(), "invalid_request"),
        (
            "region is a number",
            br#"{"code": "dev-bad", "region": 5}"#.to_vec(),
            "invalid_request",
        ),
        (
            "region is odd",
            br#"{"code": "dev-bad", "region": "EU WEST"}"#.to_vec(),
            "invalid_request",
        ),
        (
            "missing code",
            br#"{"region": "eu-west-1"}"#.to_vec(),
            "invalid_request",
        ),
        ("empty body", Vec::new(), "invalid_request"),
        ("1 MB body", one_mb.into_bytes(), "invalid_request"),
        ("10 kB of text", long_text.into_bytes(), "invalid_request"),
        ("non-UTF-8", vec![0x7b, 0xff, 0xfe, 0x7d], "invalid_request"),
        ("empty code", br#"{"code": ""}"#.to_vec(), "invalid_code"),
        ("slash", br#"{"code": "dev-bad/other"}"#.to_vec(), "invalid_code"),
        ("plus", br#"{"code": "+"}"#.to_vec(), "invalid_code"),
        ("hash", br##"{"code": "#"}"##.to_vec(), "invalid_code"),
        ("NUL", br#"{"code": "dev-bad\u0000"}"#.to_vec(), "invalid_code"),
        ("spaces", br#"{"code": "dev bad"}"#.to_vec(), "invalid_code"),
        ("leading space", br#"{"code": " dev-bad"}"#.to_vec(), "invalid_code"),
        ("dollar", br#"{"code": "$aws"}"#.to_vec(), "invalid_code"),
        (
            "65 characters",
            format!("{{\"code\":\"{}\"}}", "a".repeat(65)).into_bytes(),
            "invalid_code",
        ),
    ];
    for shape in [Shape::Rest, Shape::Http] {
        for (name, body, code) in &cases {
            let call = Call::new("POST", "/v1/claims", ALICE).body(body.clone());
            let answer = fx.send(&call, shape).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{shape:?} {name}: {:?}",
                answer.body
            );
            assert_error(&answer, StatusCode::BAD_REQUEST, code);
        }
        let mut call = Call::claim(ALICE, "dev-bad");
        call.headers.push(("idempotency-key", "has space"));
        assert_error(&fx.send(&call, shape).await, StatusCode::BAD_REQUEST, "invalid_request");
        let mut list = Call::new("GET", "/v1/devices", ALICE);
        list.query = Some(("next_token", "forged"));
        assert_error(&fx.send(&list, shape).await, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(fx.history_len("dev-bad").await, 1, "no bad request wrote anything");
    assert!(fx.published.0.lock().unwrap().is_empty(), "nothing was published");
    let list = fx.send(&Call::new("GET", "/v1/devices", ALICE), Shape::Http).await;
    assert_eq!(list.body["devices"], json!([]));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let fx = fixture().await;
    assert_error(
        &fx.send(&Call::new("GET", "/v1/nothing", ALICE), Shape::Http).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &fx.send(&Call::new("PUT", "/v1/claims", ALICE), Shape::Rest).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_claims_over_the_handler_give_one_202() {
    let fx = fixture().await;
    fx.import("dev-race").await;
    let fx = Arc::new(fx);
    let tasks = (0..20).map(|i| {
        let fx = Arc::clone(&fx);
        tokio::spawn(async move {
            let user = format!("user-{i}");
            fx.send(&Call::claim(&user, "dev-race"), Shape::Http).await.status
        })
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 19);
    assert_eq!(fx.history_len("dev-race").await, 2, "imported, claimed");
    assert_eq!(fx.published.0.lock().unwrap().len(), 1, "one publish");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let fx = fixture().await;
    fx.import("dev-idem").await;
    let mut call = Call::claim(ALICE, "dev-idem");
    call.headers.push(("idempotency-key", "3b1c-retry"));
    let first = fx.send(&call, Shape::Rest).await;
    let second = fx.send(&call, Shape::Rest).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(
        second.status,
        StatusCode::ACCEPTED,
        "the same key repeats the first answer"
    );
    assert_eq!(first.body["claim_id"], second.body["claim_id"]);
    let mut other = Call::claim(ALICE, "dev-other");
    other.headers.push(("idempotency-key", "3b1c-retry"));
    assert_error(
        &fx.send(&other, Shape::Rest).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

#[tokio::test]
async fn retry_republishes_a_live_claim_and_renews_an_expired_one_while_the_device_is_free() {
    let fx = fixture().await;
    fx.import("dev-retry").await;
    let created = fx.send(&Call::claim(ALICE, "dev-retry"), Shape::Http).await;
    let retry_path = format!("/v1/claims/{}/retry", created.body["claim_id"].as_str().unwrap());

    let again = fx.send(&Call::new("POST", &retry_path, ALICE), Shape::Http).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["state"], "endpoint_published");
    assert_eq!(fx.published.0.lock().unwrap().len(), 2, "published again");

    assert_error(
        &fx.send(&Call::new("POST", &retry_path, "mallory"), Shape::Http).await,
        StatusCode::NOT_FOUND,
        "claim_not_found",
    );

    fx.clock.advance(time::Duration::minutes(20));
    let renewed = fx.send(&Call::new("POST", &retry_path, ALICE), Shape::Http).await;
    assert_eq!(renewed.status, StatusCode::ACCEPTED, "{:?}", renewed.body);
    assert_eq!(renewed.body["state"], "endpoint_published");
    assert_eq!(renewed.body["expires_at"], "2026-03-01T12:35:00Z", "a new deadline");
    assert_eq!(fx.published.0.lock().unwrap().len(), 3);

    // Once someone else holds the device, an expired claim cannot come back.
    fx.clock.advance(time::Duration::minutes(20));
    assert_eq!(
        fx.send(&Call::claim("bob", "dev-retry"), Shape::Http).await.status,
        StatusCode::ACCEPTED
    );
    assert_error(
        &fx.send(&Call::new("POST", &retry_path, ALICE), Shape::Http).await,
        StatusCode::CONFLICT,
        "conflict",
    );
}

/// The handler with label codes enabled (a key), as `claim-api` runs with `LABEL_CODE_KEY_SECRET`.
#[tokio::test]
async fn label_codes_claim_their_device_and_never_come_back_in_answers() {
    let code = "QR:https://oem.example/d?c=Zx9/42#a";
    for shape in [Shape::Rest, Shape::Http] {
        let (fx, key) = fixture_with_label_codes().await;
        let device = NewDevice::parse("dev-coded", "espressif", Some("KETTLE-2"))
            .unwrap()
            .with_label_code(Some(code), None, Some(&key))
            .unwrap();
        fx.api
            .service
            .import(&device, Actor::Operator("test".into()))
            .await
            .unwrap();
        let hash = key.hash(&claim_shared::domain::label_code::LabelCode::parse(code).unwrap());

        let by_name = fx.send(&Call::claim(ALICE, "dev-coded"), shape).await;
        assert_error(&by_name, StatusCode::NOT_FOUND, "device_not_found");
        let created = fx.send(&Call::claim(ALICE, code), shape).await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{shape:?}: {:?}", created.body);
        assert_eq!(created.body["thing_name"], "dev-coded");
        let again = fx.send(&Call::claim(ALICE, code), shape).await;
        assert_eq!(again.status, StatusCode::OK);
        let bad = fx.send(&Call::claim(ALICE, "QR code with Zq7Blank"), shape).await;
        assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_code");
        let long = fx.send(&Call::claim(ALICE, &"c".repeat(129)), shape).await;
        assert_error(&long, StatusCode::BAD_REQUEST, "invalid_code");
        let unknown = fx.send(&Call::claim(ALICE, "QR:nobody/1"), shape).await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "device_not_found");
        for answer in [&by_name, &created, &again, &bad, &long, &unknown] {
            let text = answer.body.to_string();
            assert!(
                !text.contains("oem.example") && !text.contains(hash.as_str()) && !text.contains("Zq7Blank"),
                "{text}"
            );
        }
        assert_eq!(
            fx.published.0.lock().unwrap().len(),
            1,
            "one publish, to the device's topic"
        );
    }
}

#[tokio::test]
async fn with_an_operator_allowlist_only_the_named_iam_principals_are_operators() {
    let support = "arn:aws:sts::111122223333:assumed-role/ClaimSupport/dana";
    let admin = "arn:aws:iam::111122223333:user/admin";
    let config = ApiConfig::new(ENDPOINT)
        .unwrap()
        .with_operators("arn:aws:sts::111122223333:assumed-role/ClaimSupport/*")
        .unwrap();
    let fx = fixture_with(config).await;
    fx.import("ops-1").await;
    let path = "/v1/admin/devices/ops-1/disable";

    let refused = fx.send(&Call::admin("POST", path, admin), Shape::Rest).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(fx.history_len("ops-1").await, 1, "a refused operator changes nothing");

    let done = fx.send(&Call::admin("POST", path, support), Shape::Rest).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    assert_eq!(done.body["claimable"]["reason"], "disabled");
    let last = done.body["history"].as_array().and_then(|h| h.last()).cloned().unwrap();
    assert_eq!(last["actor"], json!({"kind": "operator", "id": support}));

    // Without a list, IAM authorization alone decides (the default).
    let open = fixture().await;
    open.import("ops-1").await;
    let inspected = open
        .send(&Call::admin("GET", "/v1/admin/devices/ops-1", admin), Shape::Rest)
        .await;
    assert_eq!(inspected.status, StatusCode::OK, "{:?}", inspected.body);
}

#[tokio::test]
async fn with_a_cors_origin_every_answer_lets_that_origin_read_it_and_its_retry_after() {
    let portal = "https://portal.example.com";
    let fx = fixture_with(unhurried(
        ApiConfig::new(ENDPOINT).unwrap().with_cors_origin(portal).unwrap(),
    ))
    .await;
    fx.import("cors-1").await;
    let created = fx.send(&Call::claim(ALICE, "cors-1"), Shape::Rest).await;
    let refused = fx.send(&Call::claim(ALICE, "no-such-device"), Shape::Rest).await;
    for answer in [&created, &refused] {
        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        assert_eq!(header("access-control-allow-origin"), portal);
        assert!(header("access-control-expose-headers").contains("retry-after"));
        assert_eq!(header("vary"), "Origin");
    }
    assert_eq!(
        (created.status, refused.status),
        (StatusCode::ACCEPTED, StatusCode::NOT_FOUND)
    );

    // Without one (the default), no browser origin may read anything.
    let closed = fixture().await;
    let answer = closed.send(&Call::new("GET", "/v1/devices", ALICE), Shape::Rest).await;
    assert!(answer.headers.get("access-control-allow-origin").is_none());
}
