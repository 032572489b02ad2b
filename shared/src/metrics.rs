//! CloudWatch metrics in the Embedded Metric Format: one JSON line on stdout per count, which
//! Lambda's log pipeline turns into a metric (namespace `ExpressLinkClaims`). No client, no extra
//! latency, and the line doubles as a searchable log record.

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "ExpressLinkClaims";

/// Counts one occurrence of `metric`, split by `dimension` (e.g. `("outcome", "created")`).
pub fn count(metric: &str, dimension: (&str, &str)) {
    count_n(metric, dimension, 1);
}

pub fn count_n(metric: &str, dimension: (&str, &str), n: u64) {
    println!("{}", emf_line(metric, dimension, n, time::OffsetDateTime::now_utc()));
}

/// The EMF document for `n` occurrences (separate for testing).
pub fn emf_line(metric: &str, dimension: (&str, &str), n: u64, at: time::OffsetDateTime) -> String {
    let millis = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    let mut document = Map::new();
    document.insert(
        "_aws".into(),
        json!({
            "Timestamp": millis,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[dimension.0]],
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        }),
    );
    document.insert(dimension.0.into(), Value::String(dimension.1.into()));
    document.insert(metric.into(), json!(n));
    Value::Object(document).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_a_valid_emf_document() {
        let line = emf_line(
            "ClaimRequests",
            ("outcome", "created"),
            1,
            time::macros::datetime!(2026-01-01 0:00 UTC),
        );
        let doc: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(doc["_aws"]["Timestamp"], 1_767_225_600_000i64);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["outcome"]]));
        assert_eq!(
            directive["Metrics"][0],
            json!({"Name": "ClaimRequests", "Unit": "Count"})
        );
        // Every dimension and metric named in the directive is a top-level member.
        assert_eq!(doc["outcome"], "created");
        assert_eq!(doc["ClaimRequests"], 1);
    }
}
