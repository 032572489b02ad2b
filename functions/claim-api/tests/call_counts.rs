//! What an accepted claim costs in calls to its dependencies, counted where the calls go: the built
//! `claim-api` binary under the Lambda Runtime API emulator reaches a private DynamoDB Local and moto
//! through proxies that record every AWS operation sent (`claim_tests::engines::CountingLink`),
//! retries included. A warm claim that is accepted and published in the request (`202`,
//! `endpoint_published`, the `iam` transport) makes at most four DynamoDB calls — label code lookup,
//! rate limits, the device, the idempotency record, the claim's commit and the publish's record
//! included — and no Secrets Manager call, by ThingName and by label code, with and without an
//! `Idempotency-Key`.
//!
//! Needs Java and moto as `scripts/dev.sh` installs them (`DYNAMODB_LOCAL_DIR`, `MOTO_PYTHON`), not
//! the local stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use claim_shared::domain::label_code::{LabelCode, LabelCodeKey};
use claim_tests::{engines::CountingLink, local_sdk_config_at};
use support::{
    deployment::{Deployment, Served, MQTT_VENDOR, USER},
    Call,
};

/// The most DynamoDB calls an accepted claim may make (issue 13; a plain handler makes two).
const MAX_DYNAMODB_CALLS: usize = 4;

/// An `mqtt` claim is not published by the API: the reads and the claim's commit only.
const MAX_DYNAMODB_CALLS_MQTT: usize = 3;

/// Warm claims of each kind.
const CLAIMS_PER_KIND: usize = 3;

const LABEL_CODE_SECRET: &str = "call-counts/label-code-key";
const LABEL_CODE_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_claim_makes_at_most_four_dynamodb_calls_and_no_secrets_manager_call() {
    let deployment = Deployment::start().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&local_sdk_config_at(&deployment.moto.url).await);
    secrets
        .create_secret()
        .name(LABEL_CODE_SECRET)
        .secret_string(LABEL_CODE_KEY)
        .send()
        .await
        .unwrap();
    let key = LabelCodeKey::new(LABEL_CODE_KEY.as_bytes()).unwrap();
    let dynamodb = CountingLink::start(&deployment.dynamodb.url).await;
    let moto = CountingLink::start(&deployment.moto.url).await;
    let mut served = deployment
        .function_via(
            &dynamodb.url,
            &moto.url,
            &[("LABEL_CODE_KEY_SECRET", LABEL_CODE_SECRET)],
        )
        .await;

    // Warm: the first claim opens the connections and reads the vendor's profile.
    let first = deployment.new_device().await;
    let warm = served.send(&Served::claim(&first)).await;
    assert_eq!(warm.status, 202, "{warm:?}\n{}", served.function.output());
    let cold = (dynamodb.calls.take(), moto.calls.take());

    let mut report = Vec::new();
    for (kind, by_label_code, idempotent) in [
        ("ThingName", false, false),
        ("ThingName, Idempotency-Key", false, true),
        ("label code", true, false),
        ("label code, Idempotency-Key", true, true),
    ] {
        for _ in 0..CLAIMS_PER_KIND {
            let (code, thing) = if by_label_code {
                let code = format!("LC-{}", uuid::Uuid::new_v4().simple());
                let hash = key.hash(&LabelCode::parse(&code).unwrap());
                (code, deployment.new_device_with_code(Some(hash)).await)
            } else {
                let thing = deployment.new_device().await;
                (thing.clone(), thing)
            };
            let idempotency_key = uuid::Uuid::new_v4().to_string();
            let mut call = Served::claim(&code);
            if idempotent {
                call = call.header("Idempotency-Key", &idempotency_key);
            }
            dynamodb.calls.take();
            moto.calls.take();
            let answer = served.send(&call).await;
            let (table_calls, moto_calls) = (dynamodb.calls.take(), moto.calls.take());
            assert_eq!(answer.status, 202, "{kind}: {answer:?}\n{}", served.function.output());
            assert_eq!(answer.body["state"], "endpoint_published", "{kind}: {answer:?}");
            assert_eq!(answer.body["thing_name"], thing.as_str(), "{kind}: {answer:?}");
            assert!(
                table_calls.len() <= MAX_DYNAMODB_CALLS,
                "{kind}: {} DynamoDB calls for one claim: {table_calls:?}",
                table_calls.len()
            );
            // One transaction (the claim's commit); the publish is recorded by one write of the
            // claim alone, not a second transaction with the device.
            let transactions = table_calls.iter().filter(|call| call.ends_with(".TransactWriteItems"));
            assert_eq!(transactions.count(), 1, "{kind}: {table_calls:?}");
            assert!(
                table_calls.last().is_some_and(|call| call.ends_with(".PutItem")),
                "{kind}: {table_calls:?}"
            );
            let secret_calls: Vec<&String> = moto_calls
                .iter()
                .filter(|call| call.starts_with("secretsmanager."))
                .collect();
            assert!(
                secret_calls.is_empty(),
                "{kind}: a warm claim read a secret: {secret_calls:?}"
            );
            report.push((kind, table_calls));

            if idempotent {
                // The repeat answers the first claim again; it is not a new one.
                let again = served.send(&call).await;
                assert_eq!(again.status, 202, "{kind}, repeated: {again:?}");
                assert_eq!(again.body["claim_id"], answer.body["claim_id"], "{kind}, repeated");
                dynamodb.calls.take();
            }
        }
    }
    // An `mqtt` vendor's claims: answered `pending` at once, never published by the API (no IoT
    // data plane call either), after the first the profile comes from the cache.
    let first_mqtt = deployment.new_device_of(MQTT_VENDOR, None).await;
    let warm_mqtt = served.send(&Served::claim(&first_mqtt)).await;
    assert_eq!(warm_mqtt.status, 202, "{warm_mqtt:?}");
    for _ in 0..CLAIMS_PER_KIND {
        let thing = deployment.new_device_of(MQTT_VENDOR, None).await;
        dynamodb.calls.take();
        moto.calls.take();
        let answer = served.send(&Served::claim(&thing)).await;
        let (table_calls, moto_calls) = (dynamodb.calls.take(), moto.calls.take());
        assert_eq!(answer.status, 202, "mqtt: {answer:?}");
        assert_eq!(answer.body["state"], "pending", "mqtt: {answer:?}");
        assert!(
            table_calls.len() <= MAX_DYNAMODB_CALLS_MQTT,
            "mqtt: {} DynamoDB calls for one claim: {table_calls:?}",
            table_calls.len()
        );
        assert!(
            moto_calls.is_empty(),
            "mqtt: no secret read, no publish: {moto_calls:?}"
        );
        report.push(("mqtt (left to the publisher)", table_calls));
    }

    // The device of the warm-up claim, claimed again by the same user: `200`, the same claim.
    let mine = served.send(&Call::claim(USER, &first)).await;
    assert_eq!(mine.status, 200, "{mine:?}");
    assert_eq!(mine.body["claim_id"], warm.body["claim_id"]);

    eprintln!("cold claim: DynamoDB {:?}; moto {:?}", cold.0, cold.1);
    for (kind, calls) in &report {
        eprintln!("warm claim, {kind}: {} DynamoDB calls {calls:?}", calls.len());
    }
}
