//! The product's CloudWatch metrics: every metric the code emits is declared in [`CATALOGUE`] and
//! recorded through one function below, so the template's alarms and dashboard (checked by
//! `tests/tests/infra`) and the emitted documents (checked on the functions' real output) can be
//! held against one list.
//!
//! Recording goes through the `metrics` facade; in the functions, `metrics_cloudwatch_embedded`
//! collects and writes one Embedded Metric Format document per dimension set on stdout after each
//! invocation ([`install`]), which CloudWatch Logs turns into metrics: no client, no extra
//! latency. Without an installed recorder (tests, `claimctl`) recording does nothing.
//!
//! Dimensions are bounded: outcome and reason names from the code, vendor names, transports, and
//! the OEM endpoints the stack is configured with.
//! Never a device, user or claim. The funnel counts and distributions are recorded twice: once
//! without dimensions (the total that alarms and the dashboard use) and once per vendor (and
//! transport), because the collector writes one dimension set per document.

use std::{
    io::Write as _,
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
    time::Duration,
};

use metrics::{counter, gauge, histogram, Unit};

pub const NAMESPACE: &str = "ExpressLinkClaims";

/// What a metric is in CloudWatch's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Summed per period.
    Count,
    /// Every value kept: percentiles (p50/p99) are available.
    Distribution,
    /// The latest reading per invocation.
    Gauge,
}

/// One metric as CloudWatch will see it: its name, what it measures, and every dimension set it
/// is emitted with (`[]` is the dimensionless total).
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub dimension_sets: &'static [&'static [&'static str]],
    pub meaning: &'static str,
}

const TOTAL: &[&str] = &[];

pub const CATALOGUE: &[MetricSpec] = &[
    MetricSpec {
        name: "ClaimRequests",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[&["outcome"]],
        meaning: "Claim requests by outcome: created, existing, or the rejection (already_claimed, rate_limited, …)",
    },
    MetricSpec {
        name: "ClaimsAccepted",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[TOTAL, &["vendor"]],
        meaning: "New claims accepted (a device reserved for a user)",
    },
    MetricSpec {
        name: "EndpointPublished",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[TOTAL, &["transport", "vendor"]],
        meaning: "Endpoint messages acknowledged by the staging endpoint",
    },
    MetricSpec {
        name: "PublishFailed",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[TOTAL, &["error_code", "transport", "vendor"]],
        meaning: "Endpoint message attempts that failed (retried with backoff until the claim expires)",
    },
    MetricSpec {
        name: "ClaimToPublishMs",
        kind: Kind::Distribution,
        unit: "Milliseconds",
        dimension_sets: &[TOTAL, &["transport", "vendor"]],
        meaning: "From a claim's acceptance to its endpoint message's acknowledgement (PUBACK or 200)",
    },
    MetricSpec {
        name: "PublishAttemptsPerClaim",
        kind: Kind::Distribution,
        unit: "Count",
        dimension_sets: &[TOTAL],
        meaning: "Attempts a claim needed until its endpoint message was acknowledged",
    },
    MetricSpec {
        name: "ClaimsProvisioned",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[TOTAL, &["target_endpoint", "vendor"]],
        meaning: "Claims completed: the device arrived in the OEM account",
    },
    MetricSpec {
        name: "ClaimToArrivalMs",
        kind: Kind::Distribution,
        unit: "Milliseconds",
        dimension_sets: &[TOTAL, &["target_endpoint", "vendor"]],
        meaning: "From a claim's acceptance to its device's arrival in the OEM account",
    },
    MetricSpec {
        name: "ClaimsExpired",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[TOTAL, &["by"]],
        meaning: "Claims whose device did not arrive in time (by: sweep, the scheduled run that records expiries)",
    },
    MetricSpec {
        name: "DevicesReleased",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[&["by"]],
        meaning: "Devices released (by: owner or operator)",
    },
    MetricSpec {
        name: "OutboxAgeSeconds",
        kind: Kind::Gauge,
        unit: "Seconds",
        dimension_sets: &[TOTAL],
        meaning: "Age of the oldest claim whose endpoint message is due, at each scheduled delivery run (0: none due)",
    },
    MetricSpec {
        name: "LifecycleEvents",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[&["outcome"]],
        meaning: "Lifecycle events put on the event bus (published), refused or not delivered (failed: retried), or stream records that could not be read (unreadable: skipped)",
    },
    MetricSpec {
        name: "DeviceArrivals",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[&["outcome"]],
        meaning: "Devices connecting to the OEM endpoint, by what their arrival meant",
    },
    MetricSpec {
        name: "Quarantines",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[&["outcome"]],
        meaning: "Rogue-device gate decisions by outcome: quarantined, or why the device was spared",
    },
    MetricSpec {
        name: "IotEvents",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[&["outcome"]],
        meaning: "IoT events that were not for this stack (ignored), not readable (malformed) or forwarded from an account that may not forward (refused)",
    },
    MetricSpec {
        name: "AttemptCountFailures",
        kind: Kind::Count,
        unit: "Count",
        dimension_sets: &[&["outcome"]],
        meaning: "Failed claims that could not be counted towards the rate limit (table unavailable)",
    },
];

/// The spec of `name` (tests and tools).
pub fn spec(name: &str) -> Option<&'static MetricSpec> {
    CATALOGUE.iter().find(|spec| spec.name == name)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn claim_request(outcome: &'static str) {
    counter!("ClaimRequests", "outcome" => outcome).increment(1);
}

pub fn claim_accepted(vendor: &str) {
    counter!("ClaimsAccepted").increment(1);
    counter!("ClaimsAccepted", "vendor" => vendor.to_owned()).increment(1);
}

/// An endpoint message acknowledged, `since_claim` after the claim was accepted, at its
/// `attempts`-th attempt.
pub fn endpoint_published(vendor: &str, transport: &'static str, since_claim: Duration, attempts: u32) {
    let labels = [("transport", transport.to_owned()), ("vendor", vendor.to_owned())];
    counter!("EndpointPublished").increment(1);
    counter!("EndpointPublished", &labels).increment(1);
    histogram!("ClaimToPublishMs").record(millis(since_claim));
    histogram!("ClaimToPublishMs", &labels).record(millis(since_claim));
    histogram!("PublishAttemptsPerClaim").record(f64::from(attempts));
    // One invocation of claim-publisher publishes up to a stream batch (1000): its distributions
    // are written out before the collector's limit, not only when the invocation ends.
    if PUBLISHED_UNWRITTEN.fetch_add(1, Ordering::Relaxed) + 1 >= WRITE_AFTER_VALUES {
        write_documents_now();
    }
}

/// The installed collector ([`install`]; none in tests and `claimctl`).
static COLLECTOR: OnceLock<&'static metrics_cloudwatch_embedded::Collector> = OnceLock::new();

/// Publishes recorded since the documents were last written by [`write_documents_now`] (the
/// writes after each invocation do not reset it: a document is then written early, never late).
static PUBLISHED_UNWRITTEN: AtomicUsize = AtomicUsize::new(0);

/// The collector keeps at most 100 values of a distribution between two documents (CloudWatch's
/// limit per metric and document) and drops the rest, each with an ERROR line; half of that leaves
/// room for publishes recorded concurrently while the documents are written.
const WRITE_AFTER_VALUES: usize = 50;

/// Writes the documents of everything recorded so far, in one write to stdout so that no log
/// line lands inside one.
fn write_documents_now() {
    PUBLISHED_UNWRITTEN.store(0, Ordering::Relaxed);
    let Some(collector) = COLLECTOR.get() else {
        return;
    };
    let mut documents = Vec::new();
    if collector.flush(&mut documents).is_ok() {
        let _ = std::io::stdout().lock().write_all(&documents);
    }
}

pub fn publish_failed(vendor: &str, transport: &'static str, error_code: &'static str) {
    let labels = [
        ("error_code", error_code.to_owned()),
        ("transport", transport.to_owned()),
        ("vendor", vendor.to_owned()),
    ];
    counter!("PublishFailed").increment(1);
    counter!("PublishFailed", &labels).increment(1);
}

/// A claim completed: its device arrived at `target_endpoint` (one of the OEM's configured
/// endpoints, so a bounded dimension), `since_claim` after the claim was accepted.
pub fn claim_provisioned(vendor: &str, target_endpoint: &str, since_claim: Duration) {
    let labels = [
        ("target_endpoint", target_endpoint.to_owned()),
        ("vendor", vendor.to_owned()),
    ];
    counter!("ClaimsProvisioned").increment(1);
    counter!("ClaimsProvisioned", &labels).increment(1);
    histogram!("ClaimToArrivalMs").record(millis(since_claim));
    histogram!("ClaimToArrivalMs", &labels).record(millis(since_claim));
}

pub fn claims_expired(by: &'static str, count: u64) {
    counter!("ClaimsExpired").increment(count);
    counter!("ClaimsExpired", "by" => by).increment(count);
}

pub fn device_released(by: &'static str) {
    counter!("DevicesReleased", "by" => by).increment(1);
}

pub fn outbox_age(oldest_due: Duration) {
    gauge!("OutboxAgeSeconds").set(oldest_due.as_secs_f64());
}

pub fn device_arrival(outcome: &'static str) {
    counter!("DeviceArrivals", "outcome" => outcome).increment(1);
}

pub fn quarantine(outcome: &'static str) {
    counter!("Quarantines", "outcome" => outcome).increment(1);
}

pub fn iot_event(outcome: &'static str) {
    counter!("IotEvents", "outcome" => outcome).increment(1);
}

pub fn lifecycle_event(outcome: &'static str) {
    counter!("LifecycleEvents", "outcome" => outcome).increment(1);
}

pub fn attempt_count_failure(outcome: &'static str) {
    counter!("AttemptCountFailures", "outcome" => outcome).increment(1);
}

/// Installs the process-wide collector (once per execution environment, in `main`) and declares
/// the catalogue's units. Its `MetricsLayer` writes the documents after every invocation.
pub fn install() -> Result<&'static metrics_cloudwatch_embedded::Collector, String> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .init()
        .map_err(|err| err.to_string())?;
    describe_units();
    let _ = COLLECTOR.set(collector);
    Ok(collector)
}

/// Tells the recorder each metric's unit (the documents carry it).
pub fn describe_units() {
    for spec in CATALOGUE {
        let unit = Unit::from_string(&spec.unit.to_ascii_lowercase()).unwrap_or(Unit::Count);
        match spec.kind {
            Kind::Count => metrics::describe_counter!(spec.name, unit, spec.meaning),
            Kind::Distribution => metrics::describe_histogram!(spec.name, unit, spec.meaning),
            Kind::Gauge => metrics::describe_gauge!(spec.name, unit, spec.meaning),
        }
    }
}
