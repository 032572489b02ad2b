//! The admin routes end to end on the running local stack: operators import, inspect, disable and
//! force-release devices over HTTP (the `x-local-operator` header stands in for IAM locally), and
//! every action lands in the device history with the operator's identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use claim_tests::e2e::{Answer, Stack, DEMO_VENDOR};
use serde_json::{json, Value};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn inspect(stack: &Stack, operator: &str, thing: &str) -> Answer {
    let answer = stack
        .admin("GET", &format!("/v1/admin/devices/{thing}"), operator, None)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer
}

fn reason(answer: &Answer) -> (&Value, &Value) {
    (&answer.body["claimable"]["now"], &answer.body["claimable"]["reason"])
}

/// Claims `thing` for `user` with a simulated module listening, and waits until it is provisioned.
async fn claim_until_owned(stack: &Stack, user: &str, thing: &str) -> String {
    let _module = stack.module(thing, stack.local.staging_port).await;
    let created = stack.claim(user, thing).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    stack
        .claim_until(user, &claim_id, "provisioned", Duration::from_secs(30))
        .await;
    claim_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_answers_per_item_is_idempotent_and_records_the_operator() {
    let stack = Stack::connect().await;
    let operator = "arn:aws:iam::123456789012:user/factory-import";
    let (a, b) = (unique("adm"), unique("adm"));
    let body = json!({"devices": [
        {"thing_name": a, "vendor": DEMO_VENDOR, "sku": "S1"},
        {"thing_name": b, "vendor": DEMO_VENDOR},
        {"thing_name": "bad/name", "vendor": DEMO_VENDOR},
        {"thing_name": unique("adm"), "vendor": ""},
        // Not a label code (a space): rejected whether label codes are enabled or not.
        {"thing_name": unique("adm"), "vendor": DEMO_VENDOR, "code": "LABEL 1"},
    ]});
    let first = stack
        .admin("PUT", "/v1/admin/devices", operator, Some(body.clone()))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let statuses: Vec<&str> = first.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["created", "created", "rejected", "rejected", "rejected"]);
    let reasons: Vec<&str> = first.body["results"].as_array().unwrap()[2..]
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].starts_with("thing_name") && reasons[1].starts_with("vendor") && reasons[2].starts_with("code"));

    let again = stack.admin("PUT", "/v1/admin/devices", operator, Some(body)).await;
    assert_eq!(again.body["results"][0]["status"], "unchanged");
    assert_eq!(again.body["results"][1]["status"], "unchanged");
    let update = json!({"devices": [{"thing_name": a, "vendor": DEMO_VENDOR, "sku": "S2"}]});
    let updated = stack.admin("PUT", "/v1/admin/devices", operator, Some(update)).await;
    assert_eq!(updated.body["results"][0]["status"], "updated");

    let record = inspect(&stack, operator, &a).await;
    assert_eq!(record.body["sku"], "S2");
    let history = record.body["history"].as_array().unwrap();
    assert_eq!(
        history.len(),
        2,
        "created and updated, nothing for the unchanged re-import"
    );
    for entry in history {
        assert_eq!(entry["event"], "imported");
        assert_eq!(entry["actor"], json!({"kind": "operator", "id": operator}));
    }

    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"thing_name": unique("adm"), "vendor": DEMO_VENDOR}))
        .collect();
    let refused = stack
        .admin(
            "PUT",
            "/v1/admin/devices",
            operator,
            Some(json!({ "devices": too_many })),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inspect_names_the_reason_a_device_cannot_be_claimed() {
    let stack = Stack::connect().await;
    let operator = "arn:aws:iam::123456789012:user/support-engineer";
    let alice = unique("alice");

    let unknown = inspect(&stack, operator, &unique("never-imported")).await;
    assert_eq!(reason(&unknown), (&json!(false), &json!("not_imported")));
    assert_eq!(unknown.body["imported"], false);

    let thing = stack.new_device(DEMO_VENDOR).await;
    assert_eq!(
        reason(&inspect(&stack, operator, &thing).await),
        (&json!(true), &json!("claimable"))
    );

    let disabled = stack
        .admin(
            "POST",
            &format!("/v1/admin/devices/{thing}/disable"),
            operator,
            Some(json!({"reason": "recall"})),
        )
        .await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);
    assert_eq!(reason(&disabled), (&json!(false), &json!("disabled")));
    assert_eq!(
        stack.claim(&alice, &thing).await.status,
        404,
        "users see a disabled device as unknown"
    );
    let enabled = stack
        .admin("POST", &format!("/v1/admin/devices/{thing}/enable"), operator, None)
        .await;
    assert_eq!(reason(&enabled), (&json!(true), &json!("claimable")));

    // Reserved: a claim waits for the device (no module is listening, so it stays reserved).
    let reserved = stack.new_device(DEMO_VENDOR).await;
    let claim = stack.claim(&alice, &reserved).await;
    assert_eq!(claim.status, 202);
    let record = inspect(&stack, operator, &reserved).await;
    assert_eq!(reason(&record), (&json!(false), &json!("reserved")));
    assert_eq!(record.body["reserved_by"], alice.as_str());
    assert_eq!(record.body["claim"]["claim_id"], claim.body["claim_id"]);

    // Owned: the claim completed.
    let owned = stack.new_device(DEMO_VENDOR).await;
    claim_until_owned(&stack, &alice, &owned).await;
    let record = inspect(&stack, operator, &owned).await;
    assert_eq!(reason(&record), (&json!(false), &json!("owned")));
    assert_eq!(record.body["owner"], alice.as_str());

    let record = inspect(&stack, operator, &thing).await;
    let events: Vec<&str> = record.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["imported", "disabled", "enabled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_release_lets_another_user_claim_and_the_history_tells_it_all() {
    let stack = Stack::connect().await;
    let operator = "arn:aws:sts::123456789012:assumed-role/support/jo";
    let (alice, bob) = (unique("alice"), unique("bob"));
    let thing = stack.new_device(DEMO_VENDOR).await;
    let first = claim_until_owned(&stack, &alice, &thing).await;
    assert_eq!(stack.claim(&bob, &thing).await.status, 409, "owned by alice");

    let path = format!("/v1/admin/devices/{thing}/release");
    let no_reason = stack.admin("POST", &path, operator, Some(json!({}))).await;
    assert_eq!(no_reason.status, 400, "a force release needs a reason");
    let released = stack
        .admin("POST", &path, operator, Some(json!({"reason": "resold, ticket 4711"})))
        .await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(reason(&released), (&json!(true), &json!("claimable")));
    let mine = stack.call("GET", &format!("/v1/claims/{first}"), &alice, None).await;
    assert_eq!(mine.body["state"], "released");

    let second = stack.claim(&bob, &thing).await;
    assert_eq!(second.status, 202, "{:?}", second.body);
    let record = inspect(&stack, operator, &thing).await;
    let history = record.body["history"].as_array().unwrap();
    let release = history.iter().find(|e| e["event"] == "released").unwrap();
    assert_eq!(release["actor"], json!({"kind": "operator", "id": operator}));
    assert_eq!(release["reason"], "resold, ticket 4711");
    assert_eq!(release["claim_id"], first.as_str());
    let claims: Vec<&Value> = history
        .iter()
        .filter(|e| e["event"] == "claimed")
        .map(|e| &e["claim_id"])
        .collect();
    assert_eq!(claims, [&json!(first), &second.body["claim_id"]]);
    assert_eq!(history.iter().filter(|e| e["actor"]["kind"] == "user").count(), 2);
}

#[tokio::test]
async fn admin_routes_need_an_operator_and_user_routes_a_user() {
    let stack = Stack::connect().await;
    let thing = stack.new_device(DEMO_VENDOR).await;
    let as_user = stack
        .call("GET", &format!("/v1/admin/devices/{thing}"), &unique("alice"), None)
        .await;
    assert_eq!(
        (as_user.status, as_user.body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let as_operator = stack
        .admin(
            "GET",
            "/v1/devices",
            "arn:aws:iam::123456789012:user/support-engineer",
            None,
        )
        .await;
    assert_eq!(as_operator.status, 401);
    let unknown = stack
        .admin(
            "GET",
            "/v1/admin/claims",
            "arn:aws:iam::123456789012:user/support-engineer",
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_who_keeps_guessing_codes_is_rate_limited_and_inspect_names_it() {
    let stack = Stack::connect().await;
    let operator = "arn:aws:iam::123456789012:user/support-engineer";
    let guesser = unique("guesser");
    let thing = stack.new_device(DEMO_VENDOR).await;
    // Inspected for the user in the support ticket.
    let for_guesser = format!("{thing}?user={guesser}");
    // Failed claims are counted in fixed windows: start with at least two minutes of one left.
    let mut before = inspect(&stack, operator, &for_guesser).await;
    let left = window_left(&before);
    if left < Duration::from_secs(120) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
        before = inspect(&stack, operator, &for_guesser).await;
    }
    assert_eq!(reason(&before), (&json!(true), &json!("claimable")));
    let limit = before.body["rate_limit"]["limit_per_user"].as_u64().unwrap();
    assert_eq!(before.body["rate_limit"]["failed_attempts_by_user"], 0);
    for i in 0..limit {
        let wrong = stack.claim(&guesser, &format!("no-such-device-{i}")).await;
        assert_eq!(wrong.status, 404, "{:?}", wrong.body);
    }

    // Now even the right code is not looked up for this user…
    let refused = stack
        .http
        .post(format!("{}/v1/claims", stack.local.api_url))
        .header("x-local-user", &guesser)
        .header("content-type", "application/json")
        .body(json!({ "code": thing }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    // …inspect tells the operator why, and when it ends; for everybody else the device is claimable.
    let after = inspect(&stack, operator, &for_guesser).await;
    assert_eq!(
        after.body["rate_limit"]["window_ends_at"], before.body["rate_limit"]["window_ends_at"],
        "all in one window"
    );
    assert_eq!(reason(&after), (&json!(false), &json!("rate_limited")));
    assert_eq!(after.body["rate_limit"]["failed_attempts_by_user"], limit);
    let wait = after.body["rate_limit"]["retry_after_seconds"].as_u64().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    let plain = inspect(&stack, operator, &thing).await;
    assert_eq!(reason(&plain), (&json!(true), &json!("claimable")));
    assert!(plain.body["rate_limit"].is_null());
    let history = plain.body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "the refusal wrote nothing: {history:?}");

    let other = stack.claim(&unique("buyer"), &thing).await;
    assert_eq!(other.status, 202, "{:?}", other.body);
}

/// How long the counting window of an inspection with `?user=` has left.
fn window_left(inspection: &Answer) -> Duration {
    let ends = inspection.body["rate_limit"]["window_ends_at"].as_str().unwrap();
    let ends = time::OffsetDateTime::parse(ends, &time::format_description::well_known::Rfc3339).unwrap();
    let left = ends - time::OffsetDateTime::now_utc();
    Duration::from_millis(u64::try_from(left.whole_milliseconds().max(0)).unwrap())
}
