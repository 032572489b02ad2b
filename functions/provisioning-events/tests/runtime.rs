//! The built `provisioning-events` binary against a minimal Lambda Runtime API emulator: whatever
//! bytes an invocation carries, the function answers on `/response` (never `/error`, which the
//! topic rule would retry into the dead-letter queue) and asks for the next invocation. Malformed
//! payloads touch no AWS service, so this needs no local stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use claim_tests::runtime_api::{Function, Report, RuntimeApi};
use serde_json::{json, Value};

/// In every garbage payload that has room for it; must never show up in the function's output.
const MARKER: &str = "GARBAGE-MARKER-7f3a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_ends_in_a_response_and_the_runtime_lives_on() {
    let malformed = json!({"outcome": "malformed"});
    let mut oversized = format!(r#"{{"event_kind":"presence_connected","padding":"{MARKER}"#).into_bytes();
    oversized.resize(1024 * 1024, b'x');
    oversized.extend_from_slice(br#""}"#);
    let invocations: Vec<(&str, Vec<u8>, Value)> = vec![
        ("not JSON", format!("xyz {MARKER}").into_bytes(), malformed.clone()),
        ("empty", Vec::new(), malformed.clone()),
        ("not UTF-8", vec![0xff, 0xfe, 0x00], malformed.clone()),
        ("nested 100k deep", "[".repeat(100_000).into_bytes(), malformed.clone()),
        ("1 MiB", oversized, malformed.clone()),
        ("null", b"null".to_vec(), malformed.clone()),
        ("an array", b"[1, 2, 3]".to_vec(), malformed.clone()),
        (
            "a field of the wrong type",
            format!(r#"{{"event_kind":"thing_created","operation":"CREATED","timestamp":"{MARKER}"}}"#).into_bytes(),
            malformed.clone(),
        ),
        (
            "a valid event after all that",
            include_bytes!("fixtures/certificate_registered.json").to_vec(),
            json!({"outcome": "ignored", "reason": "certificate_registered"}),
        ),
    ];

    let mut api = RuntimeApi::start(invocations.iter().map(|(_, payload, _)| payload.clone()).collect()).await;
    let mut function = start_function(&api, &[]);
    for (index, (name, _, expected)) in invocations.iter().enumerate() {
        let report = api.next_report().await;
        assert_eq!(
            report,
            Report::Response {
                request_id: format!("request-{index}"),
                body: expected.clone()
            },
            "{name}"
        );
    }
    assert_eq!(
        api.next_report().await,
        Report::Idle,
        "the runtime asks for the next invocation"
    );
    assert!(function.is_running(), "the runtime is still alive");

    let output = function.stop();
    assert!(!output.contains(MARKER), "the output echoes a payload:\n{output}");
    let lines: Vec<Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let logged = lines
        .iter()
        .filter(|line| line["event"] == "iot_event" && line["outcome"] == "malformed")
        .count();
    // CloudWatch's JSON log format: every log line flat, with an RFC 3339 `timestamp`, its `level`
    // and the invocation's `requestId` at the top.
    for line in lines.iter().filter(|line| line.get("level").is_some()) {
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        assert!(time::OffsetDateTime::parse(timestamp, rfc3339).is_ok(), "{line}");
        assert!(line.get("fields").is_none() && line.get("span").is_none(), "{line}");
        if line["event"] == "iot_event" {
            assert!(
                line["requestId"].as_str().is_some_and(|id| id.starts_with("request-")),
                "{line}"
            );
        }
    }
    let counted = lines
        .iter()
        .filter(|line| line["IotEvents"] == 1 && line["outcome"] == "malformed")
        .count();
    let garbage = invocations.len() - 1;
    assert_eq!(
        (logged, counted),
        (garbage, garbage),
        "one log line and one metric each:\n{output}"
    );
}

/// The stack's `LogLevel` at WARN, as the template deploys it (`LOG_LEVEL=WARN`, Lambda's own filter
/// open at TRACE): the warnings reach the log with their level, the INFO lines do not, and every
/// metric document still does (they carry no level: a filter in Lambda would drop them as INFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_warn_the_warnings_and_the_metrics_stay_and_the_info_lines_go() {
    let payloads = vec![
        b"xyz".to_vec(),
        include_bytes!("fixtures/certificate_registered.json").to_vec(),
    ];
    let mut api = RuntimeApi::start(payloads).await;
    let mut function = start_function(&api, &[("AWS_LAMBDA_LOG_LEVEL", "TRACE"), ("LOG_LEVEL", "WARN")]);
    for _ in 0..2 {
        assert!(matches!(api.next_report().await, Report::Response { .. }));
    }
    // The metrics are written once the invocation is done, before the runtime asks for the next.
    assert_eq!(api.next_report().await, Report::Idle);
    let output = function.stop();
    let lines: Vec<Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    let logged: Vec<&Value> = lines.iter().filter(|line| line.get("level").is_some()).collect();
    let malformed = logged
        .iter()
        .find(|line| line["event"] == "iot_event" && line["outcome"] == "malformed")
        .unwrap_or_else(|| panic!("the warning is logged:\n{output}"));
    assert_eq!(malformed["level"], "WARN");
    assert!(
        logged
            .iter()
            .all(|line| line["level"] == "WARN" || line["level"] == "ERROR"),
        "only warnings and errors at WARN:\n{output}"
    );
    let metrics: Vec<&Value> = lines.iter().filter(|line| line.get("_aws").is_some()).collect();
    let counted = |outcome: &str| {
        metrics
            .iter()
            .any(|doc| doc["IotEvents"] == 1 && doc["outcome"] == outcome)
    };
    assert!(
        counted("malformed") && counted("ignored"),
        "both invocations' metrics are written at WARN:\n{output}"
    );
}

/// The built function under the emulator (`claim_tests::runtime_api`); malformed payloads touch no
/// table, so its name is a placeholder.
fn start_function(api: &RuntimeApi, more: &[(&str, &str)]) -> Function {
    let mut vars = vec![("CLAIMS_TABLE", "no-table-needed")];
    vars.extend_from_slice(more);
    Function::start(env!("CARGO_BIN_EXE_provisioning-events"), api.address, &vars)
}
