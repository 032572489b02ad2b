//! What operations teams read, from the functions' real output: after a claim that completes, a
//! refused claim and a failed publish, every line the functions wrote is a flat JSON log event
//! CloudWatch reads (RFC 3339 `timestamp`, `level`, `requestId` on every decision) or a metric
//! document of the catalogue; the funnel's metrics are among them; and every Logs Insights query
//! of `docs/operations.md` runs as written over that log with the answer the runbook promises.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use claim_shared::metrics::{self, NAMESPACE};
use claim_tests::{
    e2e::{Stack, DEMO_VENDOR},
    logs_insights,
};
use serde_json::{json, Value};

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// Events logged outside an invocation (cold start), so without a `requestId`.
const COLD_START_EVENTS: [&str; 1] = ["quarantine_gate_off"];

fn read_log(stack: &Stack) -> String {
    std::fs::read_to_string(&stack.local.api_log).unwrap()
}

/// The functions' own lines (the local runner interleaves its own, plain-text ones).
fn function_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.starts_with('{')).collect()
}

/// When a line was written: a log event's `timestamp`, a metric document's `_aws.Timestamp`.
fn written_at(line: &str) -> Option<time::OffsetDateTime> {
    let value: Value = serde_json::from_str(line).ok()?;
    if let Some(ms) = value["_aws"]["Timestamp"].as_i64() {
        return time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
    }
    let timestamp = value["timestamp"].as_str()?;
    time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339).ok()
}

fn story(log: &str, claim_id: &str) -> Vec<serde_json::Map<String, Value>> {
    let query = r#"filter claim_id = "ID" | sort @timestamp asc"#.replace("ID", claim_id);
    logs_insights::run(&query, &function_lines(log)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_is_cloudwatch_json_the_metrics_are_the_catalogues_and_the_runbook_queries_answer() {
    let stack = Stack::connect().await;
    // The log file outlives stack restarts: only what the functions wrote from now on is checked.
    let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let user = format!("ops-{}", uuid::Uuid::new_v4().simple());

    // A claim that completes; someone else's claim of the same device; a publish that fails.
    let thing = stack.new_device(DEMO_VENDOR).await;
    let claim_id = stack.claim_and_onboard(&user, &thing).await;
    let refused = stack.claim("someone-else", &thing).await;
    assert_eq!(refused.body["error"]["code"], "already_claimed", "{:?}", refused.body);
    let vendor = format!("broken-{}", uuid::Uuid::new_v4().simple());
    let mut secret = claim_tests::local_claim_thing_secret(&stack.pki, stack.local.staging_port).unwrap();
    secret["certificate_pem"] = json!("");
    stack.put_secret(&vendor, &secret).await;
    let failing = stack.claim(&user, &stack.new_device(&vendor).await).await;
    assert_eq!(failing.status, 202, "{:?}", failing.body);
    let failing_id = failing.body["claim_id"].as_str().unwrap().to_owned();
    stack
        .wait_for_claim(&user, &failing_id, Duration::from_secs(10), |a| {
            a.body["failure"]["code"] == "credentials_invalid"
        })
        .await;

    // The runner writes the functions' output as it comes; wait until this test's is there, and a
    // scheduled publisher run (every 2 s locally) has written its outbox gauge since the start.
    let started = std::time::Instant::now();
    let log = loop {
        let log = read_log(&stack);
        let arrived = story(&log, &claim_id)
            .iter()
            .any(|row| row["event"] == "device_arrival");
        let failed = story(&log, &failing_id)
            .iter()
            .any(|row| row["outcome"] == "publish_failed");
        let gauged = function_lines(&log)
            .into_iter()
            .any(|line| line.contains("\"OutboxAgeSeconds\"") && written_at(line).is_some_and(|at| at >= since));
        if (arrived && failed && gauged) || started.elapsed() > Duration::from_secs(30) {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lines: Vec<&str> = function_lines(&log)
        .into_iter()
        .filter(|line| written_at(line).is_none_or(|at| at >= since))
        .collect();

    // Every line: a log event as CloudWatch's JSON log format reads it, or a catalogue metric.
    let mut written: BTreeSet<(String, BTreeSet<String>)> = BTreeSet::new();
    for line in &lines {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        if let Some(aws) = value.get("_aws") {
            let directive = &aws["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], NAMESPACE, "{line}");
            let dimensions: BTreeSet<String> = directive["Dimensions"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_owned())
                .collect();
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                let spec = metrics::spec(name).unwrap_or_else(|| panic!("not in the catalogue: {line}"));
                assert_eq!(metric["Unit"], spec.unit, "{line}");
                assert!(
                    spec.dimension_sets
                        .iter()
                        .any(|set| set.iter().map(|d| (*d).to_owned()).collect::<BTreeSet<_>>() == dimensions),
                    "{name} with dimensions {dimensions:?} is not in the catalogue: {line}"
                );
                written.insert((name.to_owned(), dimensions.clone()));
            }
            continue;
        }
        let level = value["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
        assert!(LEVELS.contains(&level), "{line}");
        let timestamp = value["timestamp"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339).is_ok(),
            "no RFC 3339 timestamp: {line}"
        );
        assert!(
            value.get("fields").is_none() && value.get("span").is_none() && value.get("spans").is_none(),
            "nested fields: {line}"
        );
        if let Some(event) = value["event"].as_str() {
            assert!(
                COLD_START_EVENTS.contains(&event) || value["requestId"].as_str().is_some_and(|id| !id.is_empty()),
                "a decision without the invocation's requestId: {line}"
            );
        }
    }
    let total = |name: &str| (name.to_owned(), BTreeSet::new());
    for funnel in [
        "ClaimsAccepted",
        "EndpointPublished",
        "ClaimToPublishMs",
        "PublishAttemptsPerClaim",
        "ClaimsProvisioned",
        "ClaimToArrivalMs",
        "PublishFailed",
        "OutboxAgeSeconds",
    ] {
        assert!(
            written.contains(&total(funnel)),
            "no {funnel} total in the log: {written:?}"
        );
    }
    let per_vendor: BTreeSet<String> = ["transport", "vendor"].map(str::to_owned).into();
    assert!(written.contains(&("EndpointPublished".to_owned(), per_vendor)));

    // The runbook's queries, as written.
    let runbook = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md")).unwrap();
    let queries = logs_insights::documented_queries(&runbook);
    assert!(queries.len() >= 5, "{queries:?}");
    let mut answered = BTreeMap::new();
    for (heading, query) in &queries {
        let query = query.replace("<claim_id>", &claim_id);
        let rows = logs_insights::run(&query, &lines).unwrap_or_else(|err| panic!("{heading}: {err}"));
        answered.insert(heading.as_str(), rows);
    }
    let rows = |heading: &str| {
        answered
            .get(heading)
            .unwrap_or_else(|| panic!("the runbook has no query {heading:?}"))
    };
    let whole_story: Vec<(Value, Value)> = rows("A claim's whole story")
        .iter()
        .map(|row| (row["event"].clone(), row["outcome"].clone()))
        .collect();
    let position = |event: &str, outcome: &str| {
        whole_story
            .iter()
            .position(|entry| *entry == (json!(event), json!(outcome)))
            .unwrap_or_else(|| panic!("{event} {outcome} is not in the story: {whole_story:?}"))
    };
    assert!(
        position("claim_decision", "created") < position("claim_publish", "published")
            && position("claim_publish", "published") < position("device_arrival", "completed"),
        "in order: {whole_story:?}"
    );
    assert!(rows("Refused claims by outcome, per hour")
        .iter()
        .any(|row| row["outcome"] == "already_claimed" && row["refused"].as_u64() >= Some(1)));
    assert!(rows("Failed publishes by error code, per hour")
        .iter()
        .any(|row| row["error_code"] == "credentials_invalid" && row["failures"].as_u64() >= Some(1)));
    let slowest = rows("Slowest claim requests");
    assert!(!slowest.is_empty() && slowest.len() <= 20);
    let latencies: Vec<f64> = slowest.iter().map(|row| row["latency_ms"].as_f64().unwrap()).collect();
    assert!(latencies.windows(2).all(|pair| pair[0] >= pair[1]), "{latencies:?}");
    let routes = rows("API latency per route");
    let claims_route = routes
        .iter()
        .find(|row| row["route"].as_str().is_some_and(|route| route.contains("/v1/claims")))
        .unwrap_or_else(|| panic!("{routes:?}"));
    assert!(claims_route["p99"].as_f64() >= claims_route["p50"].as_f64());
    assert!(rows("Warnings and errors")
        .iter()
        .all(|row| row["lines"].as_u64() >= Some(1)));
    assert!(rows("Devices quarantined")
        .iter()
        .all(|row| row["event"] == "quarantine"));
    assert_eq!(
        answered.len(),
        7,
        "every documented query is checked here: {:?}",
        answered.keys()
    );
}
