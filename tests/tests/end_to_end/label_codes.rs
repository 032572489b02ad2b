//! Label codes distinct from the ThingName, on the running local stack (`scripts/dev.sh`, whose
//! functions run with `LABEL_CODE_KEY_SECRET`): devices imported through the admin API with a code,
//! claimed over HTTP by that code (the simulated module receives its endpoint), by ThingName only
//! where the OEM allowed it; and neither a code nor its keyed hash in any answer or function log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use claim_shared::{
    adapters::secrets::load_label_code_key,
    domain::label_code::{LabelCode, LabelCodeKey},
};
use claim_tests::e2e::{Answer, Stack, DEMO_VENDOR};
use expresslink_sim::ModuleEvent;
use serde_json::json;

/// The key the functions hash codes with (the stack's secret in moto).
async fn stack_key() -> LabelCodeKey {
    let name = std::env::var("LABEL_CODE_KEY_SECRET")
        .expect("the local stack runs with LABEL_CODE_KEY_SECRET (source .local/endpoints.env)");
    load_label_code_key(&claim_tests::local_secrets().await, &name)
        .await
        .unwrap()
}

/// Imports one device through the admin API; returns its ThingName.
async fn import(stack: &Stack, item: serde_json::Value, answers: &mut Vec<String>) -> String {
    let thing = item["thing_name"].as_str().unwrap().to_owned();
    let answer = stack
        .admin(
            "PUT",
            "/v1/admin/devices",
            "arn:aws:iam::123456789012:user/label-code-test",
            Some(json!({ "devices": [item] })),
        )
        .await;
    answers.push(answer.body.to_string());
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["results"][0]["status"], "created", "{:?}", answer.body);
    thing
}

fn keep(answers: &mut Vec<String>, answer: Answer) -> Answer {
    answers.push(answer.body.to_string());
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_with_its_own_label_code_is_claimed_by_it_and_the_code_stays_secret() {
    let stack = Stack::connect().await;
    let key = stack_key().await;
    let mut answers = Vec::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    // A QR-code-like code with characters a ThingName cannot have.
    let code = format!("https://oem.example/p?c=LBL-{run}");
    let open_code = format!("LBL2#{run}");
    let hashes = [
        key.hash(&LabelCode::parse(&code).unwrap()),
        key.hash(&LabelCode::parse(&open_code).unwrap()),
    ];
    let user = format!("lc-user-{run}");

    // 1. A device whose label shows only the OEM's code.
    let closed = import(
        &stack,
        json!({"thing_name": format!("lc-closed-{run}"), "vendor": DEMO_VENDOR, "sku": "E2E", "code": code}),
        &mut answers,
    )
    .await;
    let inspected = keep(
        &mut answers,
        stack
            .admin(
                "GET",
                &format!("/v1/admin/devices/{closed}"),
                "arn:aws:iam::123456789012:user/label-code-test",
                None,
            )
            .await,
    );
    assert_eq!(inspected.body["has_label_code"], true);
    assert_eq!(inspected.body["thing_name_claims"], false);

    // The same code for another device: refused, without naming the device that has it.
    let taken = keep(
        &mut answers,
        stack
            .admin(
                "PUT",
                "/v1/admin/devices",
                "arn:aws:iam::123456789012:user/label-code-test",
                Some(
                    json!({"devices": [{"thing_name": format!("lc-dup-{run}"), "vendor": DEMO_VENDOR, "code": code}]}),
                ),
            )
            .await,
    );
    assert_eq!(taken.body["results"][0]["status"], "rejected", "{:?}", taken.body);
    assert_eq!(
        taken.body["results"][0]["reason"],
        "code: already used by another device"
    );

    // Its ThingName does not find it (indistinguishable from an unknown device).
    let by_name = keep(&mut answers, stack.claim(&user, &closed).await);
    assert_eq!(by_name.status, 404, "{:?}", by_name.body);
    assert_eq!(by_name.body["error"]["code"], "device_not_found");

    // Its code does: 202, and the module receives the endpoint on its ThingName's topic.
    let mut module = stack.module(&closed, stack.local.staging_port).await;
    let created = keep(&mut answers, stack.claim(&user, &code).await);
    assert_eq!(created.status, 202, "{:?}", created.body);
    assert_eq!(created.body["thing_name"], closed.as_str());
    module
        .wait_for(Duration::from_secs(15), |e| matches!(e, ModuleEvent::EndpointStored(_)))
        .await;
    assert_eq!(
        module.messages(),
        [(
            format!("{closed}/expresslink_config"),
            format!("{{\"Endpoint\":\"{}\"}}", stack.local.oem_endpoint).into_bytes()
        )]
    );
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    let read = stack
        .claim_until(&user, &claim_id, "provisioned", Duration::from_secs(20))
        .await;
    answers.push(read.body.to_string());
    // Sending the code again answers with the caller's claim.
    let again = keep(&mut answers, stack.claim(&user, &code).await);
    assert_eq!(
        (again.status, again.body["claim_id"].as_str()),
        (200, Some(claim_id.as_str()))
    );
    answers.push(stack.call("GET", "/v1/devices", &user, None).await.body.to_string());

    // 2. A device whose OEM also allows its ThingName: both work.
    let open = import(
        &stack,
        json!({"thing_name": format!("lc-open-{run}"), "vendor": DEMO_VENDOR, "code": open_code, "allow_thing_name": true}),
        &mut answers,
    )
    .await;
    let inspected = keep(
        &mut answers,
        stack
            .admin(
                "GET",
                &format!("/v1/admin/devices/{open}"),
                "arn:aws:iam::123456789012:user/label-code-test",
                None,
            )
            .await,
    );
    assert_eq!(
        (&inspected.body["has_label_code"], &inspected.body["thing_name_claims"]),
        (&json!(true), &json!(true))
    );
    let by_name = keep(&mut answers, stack.claim(&user, &open).await);
    assert_eq!(by_name.status, 202, "{:?}", by_name.body);
    let by_code = keep(&mut answers, stack.claim(&user, &open_code).await);
    assert_eq!(by_code.status, 200, "the same device: the caller's claim");
    assert_eq!(by_code.body["claim_id"], by_name.body["claim_id"]);

    // An unknown code is an unknown device.
    let unknown = keep(&mut answers, stack.claim(&user, &format!("nobody/{run}")).await);
    assert_eq!(unknown.status, 404);

    // Neither code nor hash in any answer or in the function log.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = std::fs::read_to_string(&stack.local.api_log).unwrap();
    assert!(log.contains("claim_decision"), "the log is the functions' log");
    for (name, text) in [("answers", answers.join("\n")), ("function log", log)] {
        for secret in [
            code.as_str(),
            open_code.as_str(),
            hashes[0].as_str(),
            hashes[1].as_str(),
        ] {
            assert!(!text.contains(secret), "{name} contain a code or its hash");
        }
        assert!(!text.contains(&format!("LBL-{run}")) && !text.contains(&format!("LBL2#{run}")));
    }
}

/// What `claim-api` does at cold start with `LABEL_CODE_KEY_SECRET`: a missing or too short secret
/// is an error naming the secret (the function does not start), never its value.
#[tokio::test]
async fn the_key_must_exist_and_be_long_enough() {
    let client = claim_tests::local_secrets().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let missing = load_label_code_key(&client, &format!("test/no-such-key-{run}")).await;
    let err = missing.err().unwrap();
    assert!(err.contains(&format!("test/no-such-key-{run}")), "{err}");

    let short_name = format!("test/short-key-{run}");
    let short_value = format!("short-{}", &run[..8]);
    client
        .create_secret()
        .name(&short_name)
        .secret_string(&short_value)
        .send()
        .await
        .unwrap();
    let err = load_label_code_key(&client, &short_name).await.err().unwrap();
    assert!(err.contains("at least 32 bytes") && err.contains(&short_name), "{err}");
    assert!(!err.contains(&short_value), "{err}");
}
