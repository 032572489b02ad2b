//! A broken endpoint configuration stops `claim-api` at cold start, before it serves anything, with
//! a message that names the bad entry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn cold_start(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_claim-api"));
    command
        .env_clear()
        .env("CLAIMS_TABLE", "claims")
        .env("AWS_REGION", "us-east-1")
        .envs(vars.iter().copied());
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_endpoint_rule_fails_the_cold_start_naming_the_entry() {
    let rules = r#"{"endpoints":{"us":{"host":"a-ats.iot.us-east-1.amazonaws.com"}},
                    "rules":[{"sku":"EU-*","endpoint":"eu"}],"default":"us"}"#;
    let (code, stderr) = cold_start(&[("OEM_ENDPOINTS", rules)]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(r#"OEM_ENDPOINTS: rules[0].endpoint \"eu\" is not one of the endpoints (us)"#)
            || stderr.contains(r#"OEM_ENDPOINTS: rules[0].endpoint "eu" is not one of the endpoints (us)"#),
        "{stderr}"
    );
}

#[test]
fn an_endpoint_whose_iot_events_never_reach_the_stack_fails_the_cold_start() {
    let plan = r#"{"endpoints":{"us":{"host":"a-ats.iot.us-east-1.amazonaws.com"},
                                "eu":{"host":"b-ats.iot.eu-west-1.amazonaws.com"}},"default":"us"}"#;
    let (code, stderr) = cold_start(&[("OEM_ENDPOINTS", plan)]);
    assert_ne!(code, Some(0));
    let expected = r#"OEM_ENDPOINTS: endpoint "eu" is in region eu-west-1 but this stack runs in us-east-1: its devices' IoT events never reach this stack"#;
    assert!(
        stderr.contains(expected) || stderr.contains(&expected.replace('"', r#"\""#)),
        "{stderr}"
    );

    // Another account, from the template's STACK_ACCOUNT_ID.
    let plan =
        r#"{"endpoints":{"b":{"host":"a-ats.iot.us-east-1.amazonaws.com","account":"444455556666"}},"default":"b"}"#;
    let (code, stderr) = cold_start(&[("OEM_ENDPOINTS", plan), ("STACK_ACCOUNT_ID", "111122223333")]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("is in account 444455556666 but this stack runs in 111122223333"),
        "{stderr}"
    );

    let (code, stderr) = cold_start(&[("OEM_ENDPOINT", "one-ats.iot.eu-west-1.amazonaws.com")]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("OEM_ENDPOINT: "), "{stderr}");
    assert!(
        stderr.contains("is in region eu-west-1 but this stack runs in us-east-1"),
        "{stderr}"
    );
}

#[test]
fn a_forwarded_endpoint_passes_the_check() {
    // The check passes, so the cold start goes on to the next setting and stops there (no table
    // variable): proof that the endpoints were accepted without any AWS service.
    let plan = r#"{"endpoints":{"us":{"host":"a-ats.iot.us-east-1.amazonaws.com","account":"111122223333"},
                                "eu":{"host":"b-ats.iot.eu-west-1.amazonaws.com","events":"forwarded"}},"default":"us"}"#;
    let mut command = Command::new(env!("CARGO_BIN_EXE_claim-api"));
    command
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("STACK_ACCOUNT_ID", "111122223333")
        .env("OEM_ENDPOINTS", plan);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("CLAIMS_TABLE is not set"), "{stderr}");
    assert!(!stderr.contains("OEM_ENDPOINTS"), "{stderr}");
}

#[test]
fn a_bad_single_endpoint_fails_the_cold_start_too() {
    let (code, stderr) = cold_start(&[("OEM_ENDPOINT", "https://example.com")]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("OEM_ENDPOINT must be a host name"), "{stderr}");
    let (code, stderr) = cold_start(&[]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("OEM_ENDPOINT is not set"), "{stderr}");
}
