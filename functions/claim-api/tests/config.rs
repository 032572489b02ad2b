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
fn a_bad_single_endpoint_fails_the_cold_start_too() {
    let (code, stderr) = cold_start(&[("OEM_ENDPOINT", "https://example.com")]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("OEM_ENDPOINT must be a host name"), "{stderr}");
    let (code, stderr) = cold_start(&[]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("OEM_ENDPOINT is not set"), "{stderr}");
}
