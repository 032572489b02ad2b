//! The metric documents as the functions write them: the real collector (`metrics::install`, the
//! one the functions use) fed through every recording function, flushed, and every document held
//! against the CloudWatch Embedded Metric Format and against `CATALOGUE`: each metric of the
//! catalogue comes out with each of its dimension sets and its unit, and nothing else comes out.
//! (One test: the collector is process-wide.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use claim_shared::metrics::{self, Kind, CATALOGUE, NAMESPACE};
use serde_json::Value;

fn record_one_of_each() {
    metrics::claim_request("created");
    metrics::claim_accepted("acme");
    metrics::endpoint_published("acme", "mqtt", Duration::from_millis(1500), 2);
    metrics::endpoint_published("acme", "mqtt", Duration::from_millis(700), 1);
    metrics::publish_failed("acme", "https", "staging_timeout");
    metrics::claim_provisioned(
        "acme",
        "a1b2c3-ats.iot.eu-west-1.amazonaws.com",
        Duration::from_secs(30),
    );
    metrics::claims_expired("sweep", 3);
    metrics::device_released("owner");
    metrics::outbox_age(Duration::from_secs(42));
    metrics::device_arrival("completed");
    metrics::quarantine("quarantined");
    metrics::iot_event("ignored");
    metrics::attempt_count_failure("store_unavailable");
    metrics::lifecycle_event("published");
}

type Seen = BTreeMap<(String, BTreeSet<String>), Vec<Value>>;

/// Checks one document's shape; returns (metric, dimension names) → values.
fn read_document(line: &str, seen: &mut Seen) {
    let doc: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    let aws = &doc["_aws"];
    assert!(
        aws["Timestamp"].as_u64().is_some_and(|ms| ms > 1_700_000_000_000),
        "{line}"
    );
    let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
    assert_eq!(directives.len(), 1, "{line}");
    let directive = &directives[0];
    assert_eq!(directive["Namespace"], NAMESPACE, "{line}");
    let sets = directive["Dimensions"].as_array().expect("Dimensions");
    assert_eq!(sets.len(), 1, "one dimension set per document: {line}");
    let dimensions: BTreeSet<String> = sets[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap().to_owned())
        .collect();
    assert!(dimensions.len() <= 30, "{line}");
    for name in &dimensions {
        assert!(
            doc[name].as_str().is_some_and(|v| !v.is_empty()),
            "dimension {name} is a top-level string: {line}"
        );
    }
    let metrics = directive["Metrics"].as_array().expect("Metrics");
    assert!(!metrics.is_empty() && metrics.len() <= 100, "{line}");
    for metric in metrics {
        let name = metric["Name"].as_str().unwrap();
        let spec = metrics::spec(name).unwrap_or_else(|| panic!("{name} is not in the catalogue: {line}"));
        assert_eq!(metric["Unit"], spec.unit, "{name}'s unit: {line}");
        let value = &doc[name];
        match spec.kind {
            Kind::Count => assert!(value.as_u64().is_some_and(|n| n > 0), "{name}: {line}"),
            Kind::Gauge => assert!(value.as_f64().is_some(), "{name}: {line}"),
            Kind::Distribution => {
                let values = value
                    .as_array()
                    .unwrap_or_else(|| panic!("{name} is a list of values: {line}"));
                assert!(!values.is_empty() && values.len() <= 100, "{line}");
                assert!(values.iter().all(Value::is_number), "{line}");
            }
        }
        let entry = seen.entry((name.to_owned(), dimensions.clone())).or_default();
        entry.push(value.clone());
    }
}

/// What one flush of the collector writes: the text, and its documents read and checked.
fn flush(collector: &metrics_cloudwatch_embedded::Collector) -> (String, Seen) {
    let mut out = Vec::new();
    collector.flush(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut seen = Seen::new();
    for line in text.lines() {
        read_document(line, &mut seen);
    }
    (text, seen)
}

#[test]
fn every_catalogue_metric_is_written_as_a_valid_emf_document_with_each_of_its_dimension_sets() {
    let collector = metrics::install().expect("the first collector of this process");
    record_one_of_each();
    let (text, seen) = flush(collector);

    let mut expected = BTreeSet::new();
    for spec in CATALOGUE {
        for set in spec.dimension_sets {
            expected.insert((
                spec.name.to_owned(),
                set.iter().map(|d| (*d).to_owned()).collect::<BTreeSet<_>>(),
            ));
        }
    }
    let written: BTreeSet<_> = seen.keys().cloned().collect();
    assert_eq!(written, expected, "written vs catalogue:\n{text}");

    // Values as recorded: counts add up within an invocation, distributions keep every value.
    let total = |name: &str| seen[&(name.to_owned(), BTreeSet::new())][0].clone();
    assert_eq!(total("EndpointPublished"), 2);
    assert_eq!(total("ClaimsExpired"), 3);
    assert_eq!(total("ClaimToPublishMs"), serde_json::json!([1500.0, 700.0]));
    assert_eq!(total("PublishAttemptsPerClaim"), serde_json::json!([2.0, 1.0]));
    assert_eq!(total("OutboxAgeSeconds"), 42.0);

    // A second flush writes only what was recorded since: nothing counted twice.
    metrics::claim_accepted("acme");
    let (again, seen) = flush(collector);
    let names: BTreeSet<&str> = seen.keys().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["ClaimsAccepted", "OutboxAgeSeconds"]),
        "after the first flush only the new count (and the gauge's last reading):\n{again}"
    );
    assert_eq!(seen[&("ClaimsAccepted".to_owned(), BTreeSet::new())][0], 1);
}

/// `docs/operations.md`'s metric table names every metric of the catalogue with its kind, unit and
/// dimension sets, and no other.
#[test]
fn the_runbooks_metric_table_is_the_catalogue() {
    let runbook = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md")).unwrap();
    let table: BTreeMap<String, (String, String, String)> = runbook
        .lines()
        .skip_while(|line| !line.starts_with("| metric | kind | unit | dimension sets |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_owned(),
                (cells[2].to_owned(), cells[3].to_owned(), cells[4].to_owned()),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, String, String)> = CATALOGUE
        .iter()
        .map(|spec| {
            let sets: Vec<String> = spec
                .dimension_sets
                .iter()
                .map(|set| format!("`[{}]`", set.join(", ")))
                .collect();
            (
                spec.name.to_owned(),
                (
                    format!("{:?}", spec.kind).to_lowercase(),
                    spec.unit.to_owned(),
                    sets.join(" "),
                ),
            )
        })
        .collect();
    assert_eq!(table, expected);
}
