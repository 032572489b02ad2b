//! Hostile input through the handler, as API Gateway delivers it: every case is answered in the
//! error shape, with nothing written and nothing published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use lambda_http::http::StatusCode;
use serde_json::json;
use support::{assert_error, fixture, Call, Shape, ALICE};

const OPERATOR: &str = "arn:aws:iam::111122223333:user/ops";

#[tokio::test]
async fn a_body_with_a_duplicate_key_is_refused_on_every_route() {
    let fx = fixture().await;
    fx.import("dup-1").await;
    let dup_code = br##"{"code":"#","code":"dup-1"}"##.to_vec();
    let dup_reason = br#"{"reason":"a","reason":"b"}"#.to_vec();
    let dup_import = br#"{"devices":[{"thing_name":"dup-2","vendor":"espressif","vendor":"other"}]}"#.to_vec();
    let calls = [
        Call::new("POST", "/v1/claims", ALICE).body(dup_code.clone()),
        // Swapped: the first value would be the real one for a reader that keeps the first.
        Call::new("POST", "/v1/claims", ALICE).body(br##"{"code":"dup-1","code":"#"}"##.to_vec()),
        Call::admin("PUT", "/v1/admin/devices", OPERATOR).body(dup_import),
        Call::admin("POST", "/v1/admin/devices/dup-1/release", OPERATOR).body(dup_reason.clone()),
        Call::admin("POST", "/v1/admin/devices/dup-1/disable", OPERATOR).body(dup_reason),
    ];
    for shape in [Shape::Rest, Shape::Http] {
        // Operators sign admin calls with IAM, which the REST API shape carries.
        for call in calls
            .iter()
            .filter(|call| call.operator.is_none() || matches!(shape, Shape::Rest))
        {
            let answer = fx.send(call, shape).await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
            let message = answer.body["error"]["message"].as_str().unwrap();
            assert!(message.contains("duplicate key"), "{message}");
        }
    }
    assert_eq!(
        fx.history_len("dup-1").await,
        1,
        "only its import: nothing claimed, released or disabled"
    );
    assert!(fx.published.0.lock().unwrap().is_empty(), "nothing published");
    let inspected = fx
        .send(&Call::admin("GET", "/v1/admin/devices/dup-2", OPERATOR), Shape::Rest)
        .await;
    assert_eq!(inspected.body["imported"], json!(false), "nothing imported");
}

#[tokio::test]
async fn a_user_over_the_limit_gets_429_whatever_they_send() {
    let fx = fixture().await;
    let limit = claim_shared::domain::attempts::AttemptLimits::default().per_user;
    for i in 0..limit {
        let guess = format!("guess-{i}");
        let answer = fx.send(&Call::claim(ALICE, &guess), Shape::Rest).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "device_not_found");
    }
    let unreadable = [
        Call::claim(ALICE, "a b"),
        Call::claim(ALICE, ""),
        Call::new("POST", "/v1/claims", ALICE).body(b"{not json".to_vec()),
        Call::new("POST", "/v1/claims", ALICE).body(br#"{"code": 5}"#.to_vec()),
        Call::claim(ALICE, "dev-1").header("Idempotency-Key", ""),
    ];
    for call in &unreadable {
        let answer = fx.send(call, Shape::Rest).await;
        assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(answer.headers.contains_key("retry-after"));
    }
    // Someone else's unreadable request is still told what is wrong with it.
    let other = fx.send(&Call::claim("someone-else", "a b"), Shape::Rest).await;
    assert_error(&other, StatusCode::BAD_REQUEST, "invalid_code");
}

#[tokio::test]
async fn a_method_a_resource_does_not_have_is_405_with_allow() {
    let fx = fixture().await;
    for (method, path, allow) in [
        ("TRACE", "/v1/devices", "GET"),
        ("PUT", "/v1/claims", "POST"),
        ("PATCH", "/v1/devices/dev-1", "GET, DELETE"),
        ("DELETE", "/v1/claims/c1", "GET"),
        ("GET", "/v1/claims/c1/retry", "POST"),
    ] {
        let answer = fx.send(&Call::new(method, path, ALICE), Shape::Rest).await;
        assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(
            answer.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
    for (method, path, allow) in [
        ("GET", "/v1/admin/devices", "PUT"),
        ("DELETE", "/v1/admin/devices/dev-1", "GET"),
        ("GET", "/v1/admin/devices/dev-1/disable", "POST"),
    ] {
        let answer = fx.send(&Call::admin(method, path, OPERATOR), Shape::Rest).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(
            answer.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_body_that_is_not_sent_as_json_is_415_and_changes_nothing() {
    let fx = fixture().await;
    fx.import("ct-1").await;
    let json = json!({"code": "ct-1"}).to_string().into_bytes();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonp",
        "multipart/form-data",
    ] {
        let answer = fx
            .send(
                &Call::new("POST", "/v1/claims", ALICE)
                    .body(json.clone())
                    .header("content-type", content_type),
                Shape::Rest,
            )
            .await;
        assert_error(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        let admin = Call::admin("POST", "/v1/admin/devices/ct-1/disable", OPERATOR)
            .body(br#"{"reason":"x"}"#.to_vec())
            .header("content-type", content_type);
        assert_eq!(
            fx.send(&admin, Shape::Rest).await.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
    assert_eq!(fx.history_len("ct-1").await, 1, "nothing claimed or disabled");
    assert!(fx.published.0.lock().unwrap().is_empty());
    // JSON with parameters, in any case, and no content type at all are read as JSON.
    for content_type in [Some("application/json; charset=utf-8"), Some("Application/JSON"), None] {
        let call = match content_type {
            Some(content_type) => Call::claim(ALICE, "ct-1").header("content-type", content_type),
            None => Call::claim(ALICE, "ct-1").without_header("content-type"),
        };
        let answer = fx.send(&call, Shape::Rest).await;
        assert!(answer.status.is_success(), "{content_type:?}: {:?}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_retries_publishes_once_and_answers_429_with_retry_after() {
    let fx = std::sync::Arc::new(fixture().await);
    fx.import("flood-1").await;
    let created = fx.send(&Call::claim(ALICE, "flood-1"), Shape::Rest).await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    let path = format!("/v1/claims/{}/retry", created.body["claim_id"].as_str().unwrap());
    let retries = (0..100).map(|_| {
        let (fx, path) = (std::sync::Arc::clone(&fx), path.clone());
        tokio::spawn(async move { fx.send(&Call::new("POST", &path, ALICE), Shape::Rest).await })
    });
    let answers: Vec<_> = futures::future::join_all(retries)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let accepted = answers.iter().filter(|a| a.status == StatusCode::ACCEPTED).count();
    assert_eq!(accepted, 1, "one retry goes through");
    for refused in answers.iter().filter(|a| a.status != StatusCode::ACCEPTED) {
        assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let wait: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=10).contains(&wait), "{wait}");
    }
    assert_eq!(
        fx.published.0.lock().unwrap().len(),
        2,
        "the claim's own publish and one for the retry"
    );
}

#[tokio::test]
async fn every_user_route_treats_a_disabled_device_as_out_of_service() {
    let fx = fixture().await;
    fx.import("off-1").await;
    let created = fx.send(&Call::claim(ALICE, "off-1"), Shape::Rest).await;
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    let parsed = claim_shared::domain::ids::ClaimId::parse(&claim_id).unwrap();
    fx.api.service.mark_provisioned(&parsed).await.unwrap();
    let disable =
        Call::admin("POST", "/v1/admin/devices/off-1/disable", OPERATOR).body(br#"{"reason":"recall"}"#.to_vec());
    assert_eq!(fx.send(&disable, Shape::Rest).await.status, StatusCode::OK);

    let device = fx
        .send(&Call::new("GET", "/v1/devices/off-1", ALICE), Shape::Rest)
        .await;
    assert_error(&device, StatusCode::NOT_FOUND, "device_not_found");
    let list = fx.send(&Call::new("GET", "/v1/devices", ALICE), Shape::Rest).await;
    assert_eq!(list.body["devices"], json!([]));
    let release = fx
        .send(&Call::new("DELETE", "/v1/devices/off-1", ALICE), Shape::Rest)
        .await;
    assert_error(&release, StatusCode::NOT_FOUND, "device_not_found");
    let retry = fx
        .send(
            &Call::new("POST", &format!("/v1/claims/{claim_id}/retry"), ALICE),
            Shape::Rest,
        )
        .await;
    assert_error(&retry, StatusCode::CONFLICT, "conflict");
    let again = fx.send(&Call::claim(ALICE, "off-1"), Shape::Rest).await;
    assert_error(&again, StatusCode::NOT_FOUND, "device_not_found");
    // The claim itself stays readable: it is the user's record.
    let claim = fx
        .send(&Call::new("GET", &format!("/v1/claims/{claim_id}"), ALICE), Shape::Rest)
        .await;
    assert_eq!(claim.body["state"], "provisioned");

    let enable = Call::admin("POST", "/v1/admin/devices/off-1/enable", OPERATOR);
    assert_eq!(fx.send(&enable, Shape::Rest).await.status, StatusCode::OK);
    let device = fx
        .send(&Call::new("GET", "/v1/devices/off-1", ALICE), Shape::Rest)
        .await;
    assert_eq!(device.status, StatusCode::OK, "{:?}", device.body);
}
