//! `infra/openapi.yaml` matches what the function serves: the same routes, and the same fields in
//! the claim body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use claim_api::{ADMIN_ROUTES, ROUTES};
use claim_shared::{
    domain::{
        claim::Claim,
        ids::{ClaimId, ThingName, UserId},
    },
    views::{claim_view, inspection_view},
};
use serde_yaml::Value;

fn document() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/openapi.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_document_lists_exactly_the_routes_served() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, operations) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in operations.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_uppercase();
            documented.insert(format!("{method} {}", path.as_str().unwrap()));
        }
    }
    let served: BTreeSet<String> = ROUTES.iter().chain(&ADMIN_ROUTES).map(|r| (*r).to_owned()).collect();
    assert_eq!(documented, served);
}

#[test]
fn admin_operations_are_iam_signed_and_user_operations_use_cognito() {
    let doc = document();
    assert_eq!(doc["security"][0]["cognito"].as_sequence().map(Vec::len), Some(0));
    for (path, operations) in doc["paths"].as_mapping().unwrap() {
        let admin = path.as_str().unwrap().starts_with("/v1/admin/");
        for (method, operation) in operations.as_mapping().unwrap() {
            let own = &operation["security"][0]["iam"];
            assert_eq!(!own.is_null(), admin, "{method:?} {path:?}");
        }
    }
}

#[test]
fn the_inspection_schema_names_exactly_the_fields_inspect_returns() {
    let doc = document();
    let schema = &doc["components"]["responses"]["Inspection"]["content"]["application/json"]["schema"];
    let documented: BTreeSet<String> = schema["properties"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let inspection = claim_shared::service::Inspection {
        thing_name: ThingName::parse("dev-1").unwrap(),
        device: None,
        holding_claim: None,
        history: Vec::new(),
        claimable_now: false,
        reason: "not_imported",
        attempts: None,
        at: time::OffsetDateTime::now_utc(),
    };
    let returned: BTreeSet<String> = inspection_view(&inspection)
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(returned, documented);
}

/// Every error answer has the error shape; every operation can answer `503` (a dependency or the
/// request budget), and a `503` always carries `Retry-After`.
#[test]
fn every_error_status_uses_the_error_shape() {
    let doc = document();
    for (path, operations) in doc["paths"].as_mapping().unwrap() {
        for (method, operation) in operations.as_mapping().unwrap() {
            let responses = operation["responses"].as_mapping().unwrap();
            for (status, response) in responses {
                let status: u16 = status.as_str().unwrap().parse().unwrap();
                let expected = match status {
                    503 => "#/components/responses/Unavailable",
                    400.. => "#/components/responses/Error",
                    _ => continue,
                };
                assert_eq!(
                    response["$ref"].as_str(),
                    Some(expected),
                    "{method:?} {path:?} {status}"
                );
            }
            assert!(responses.contains_key("503"), "{method:?} {path:?} can answer 503");
        }
    }
    let responses = &doc["components"]["responses"];
    assert_eq!(
        responses["Unavailable"]["content"], responses["Error"]["content"],
        "the error shape"
    );
    let retry_after = &responses["Unavailable"]["headers"]["Retry-After"];
    assert_eq!(retry_after["required"].as_bool(), Some(true), "{retry_after:?}");
}

#[test]
fn the_claim_schema_names_exactly_the_fields_the_api_returns() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["Claim"];
    let required: BTreeSet<String> = schema["required"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let properties: BTreeSet<String> = schema["properties"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let now = time::OffsetDateTime::now_utc();
    let claim = Claim::new(
        ClaimId::new_random(),
        ThingName::parse("dev-1").unwrap(),
        UserId::parse("u").unwrap(),
        "vendor".into(),
        "oem-ats.iot.eu-west-1.amazonaws.com".into(),
        now,
        time::Duration::minutes(15),
    );
    let returned: BTreeSet<String> = claim_view(&claim, now).as_object().unwrap().keys().cloned().collect();
    assert_eq!(returned, required);
    assert_eq!(returned, properties);
}
