//! The rounds summed up per number of instances and implementation, with the ratios of ours to the
//! Python baseline: printed as a markdown table, and written with every round's figures as JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::round::RoundResult;

/// The Python baseline's name in the rounds.
pub const BASELINE: &str = "python";

/// One implementation at one K, over all its rounds (times in milliseconds).
#[derive(Serialize, Clone, Debug, Default)]
pub struct Summary {
    pub implementation: String,
    pub instances: usize,
    pub rounds: usize,
    pub claims: usize,
    pub init_p50: f64,
    pub first_p50: f64,
    pub warm_p50: f64,
    pub warm_p99: f64,
    pub cpu_per_warm_claim: f64,
    pub peak_rss_mb: f64,
    /// DynamoDB Local's CPU time over the rounds per claim (ms).
    pub engine_cpu_per_claim: f64,
    /// The harness's CPU time over the rounds per claim (ms).
    pub harness_cpu_per_claim: f64,
    pub dynamodb_per_warm_claim: f64,
    pub secrets_per_warm_claim: f64,
    pub accepted: usize,
    pub answered_published: usize,
    pub delivered: usize,
    pub duplicates: usize,
    pub connects_per_claim: f64,
    pub most_connects_per_second: usize,
    pub quota_violations: usize,
    pub messages_per_second: f64,
    pub most_messages_in_a_second: usize,
    pub accept_to_message_p50: f64,
    pub accept_to_message_p99: f64,
    pub last_message_after_last_answer: f64,
    /// claim-publisher per delivered claim: CPU (ms) and DynamoDB calls; its peak RSS (MB).
    pub publisher_cpu_per_claim: Option<f64>,
    pub publisher_dynamodb_per_claim: Option<f64>,
    pub publisher_peak_rss_mb: Option<f64>,
}

/// The `q` quantile of `values` (milliseconds; negative values count as 0), to 3 significant digits.
fn quantile(values: impl IntoIterator<Item = f64>, q: f64) -> f64 {
    let Ok(mut histogram) = Histogram::<u64>::new(3) else {
        return f64::NAN;
    };
    for value in values {
        // Microseconds; the histogram grows as needed.
        let _ = histogram.record((value.max(0.0) * 1000.0).round() as u64);
    }
    if histogram.is_empty() {
        return f64::NAN;
    }
    histogram.value_at_quantile(q) as f64 / 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn summarise(rounds: &[RoundResult]) -> Vec<Summary> {
    let mut groups: BTreeMap<(usize, String), Vec<&RoundResult>> = BTreeMap::new();
    for round in rounds {
        groups
            .entry((round.instances, round.implementation.clone()))
            .or_default()
            .push(round);
    }
    groups
        .into_iter()
        .map(|((instances, implementation), rounds)| {
            let all = |pick: fn(&RoundResult) -> &Vec<f64>| rounds.iter().flat_map(move |r| pick(r).iter().copied());
            let sum = |pick: fn(&RoundResult) -> usize| rounds.iter().map(|r| pick(r)).sum::<usize>();
            let warm_claims = sum(RoundResult::warm_claims).max(1) as f64;
            let claims = sum(|r| r.claims);
            let delivered = sum(|r| r.delivered);
            let publishers: Vec<_> = rounds.iter().filter_map(|r| r.publisher.as_ref()).collect();
            let per_delivered = |total: f64| (!publishers.is_empty()).then(|| total / delivered.max(1) as f64);
            Summary {
                implementation,
                instances,
                rounds: rounds.len(),
                claims,
                init_p50: quantile(all(|r| &r.init_ms), 0.5),
                first_p50: quantile(all(|r| &r.first_ms), 0.5),
                warm_p50: quantile(all(|r| &r.warm_ms), 0.5),
                warm_p99: quantile(all(|r| &r.warm_ms), 0.99),
                cpu_per_warm_claim: rounds.iter().map(|r| r.warm_cpu_ms).sum::<f64>() / warm_claims,
                peak_rss_mb: mb(rounds.iter().map(|r| r.peak_rss_bytes).max().unwrap_or_default()),
                engine_cpu_per_claim: rounds.iter().map(|r| r.engine_cpu_ms).sum::<f64>() / claims.max(1) as f64,
                harness_cpu_per_claim: rounds.iter().map(|r| r.harness_cpu_ms).sum::<f64>() / claims.max(1) as f64,
                dynamodb_per_warm_claim: rounds.iter().map(|r| r.calls_per_warm_claim("DynamoDB")).sum::<f64>()
                    / rounds.len() as f64,
                secrets_per_warm_claim: rounds
                    .iter()
                    .map(|r| r.calls_per_warm_claim("secretsmanager"))
                    .sum::<f64>()
                    / rounds.len() as f64,
                accepted: rounds
                    .iter()
                    .map(|r| r.statuses.get(&202).copied().unwrap_or_default())
                    .sum(),
                answered_published: sum(|r| r.answered_published),
                delivered,
                duplicates: sum(|r| r.duplicates),
                connects_per_claim: sum(|r| r.connects) as f64 / claims.max(1) as f64,
                most_connects_per_second: rounds
                    .iter()
                    .map(|r| r.most_connects_per_second)
                    .max()
                    .unwrap_or_default(),
                quota_violations: sum(|r| r.quota_violations.len()),
                messages_per_second: rounds.iter().map(|r| r.messages_per_second).sum::<f64>() / rounds.len() as f64,
                most_messages_in_a_second: rounds
                    .iter()
                    .map(|r| r.most_messages_in_a_second)
                    .max()
                    .unwrap_or_default(),
                accept_to_message_p50: quantile(all(|r| &r.accept_to_message_ms), 0.5),
                accept_to_message_p99: quantile(all(|r| &r.accept_to_message_ms), 0.99),
                last_message_after_last_answer: rounds
                    .iter()
                    .map(|r| r.last_message_after_last_answer_ms)
                    .fold(f64::NAN, f64::max),
                publisher_cpu_per_claim: per_delivered(publishers.iter().map(|p| p.cpu_ms).sum()),
                publisher_dynamodb_per_claim: per_delivered(publishers.iter().map(|p| p.dynamodb_calls as f64).sum()),
                publisher_peak_rss_mb: publishers.iter().map(|p| p.peak_rss_bytes).max().map(mb),
            }
        })
        .collect()
}

/// A row of the table: its label, the figure of a summary, and whether a ratio means anything.
type Row = (&'static str, fn(&Summary) -> Option<f64>, bool);

const ROWS: &[Row] = &[
    ("init (ms, p50 of instances)", |s| Some(s.init_p50), true),
    ("first invocation (ms, p50)", |s| Some(s.first_p50), true),
    ("warm p50 (ms)", |s| Some(s.warm_p50), true),
    ("warm p99 (ms)", |s| Some(s.warm_p99), true),
    ("CPU per warm claim (ms)", |s| Some(s.cpu_per_warm_claim), true),
    ("peak RSS (MB)", |s| Some(s.peak_rss_mb), true),
    (
        "DynamoDB Local CPU per claim (ms)",
        |s| Some(s.engine_cpu_per_claim),
        true,
    ),
    ("harness CPU per claim (ms)", |s| Some(s.harness_cpu_per_claim), true),
    (
        "DynamoDB calls per warm claim",
        |s| Some(s.dynamodb_per_warm_claim),
        true,
    ),
    (
        "Secrets Manager calls per warm claim",
        |s| Some(s.secrets_per_warm_claim),
        false,
    ),
    (
        "accepted (202) / claims",
        |s| Some(s.accepted as f64 / s.claims.max(1) as f64),
        false,
    ),
    (
        "answered endpoint_published",
        |s| Some(s.answered_published as f64),
        false,
    ),
    ("endpoint messages delivered", |s| Some(s.delivered as f64), false),
    ("duplicate messages", |s| Some(s.duplicates as f64), false),
    ("MQTT CONNECTs per claim", |s| Some(s.connects_per_claim), true),
    (
        "most CONNECTs in a second (client id)",
        |s| Some(s.most_connects_per_second as f64),
        false,
    ),
    (
        "connection quota violations",
        |s| Some(s.quota_violations as f64),
        false,
    ),
    ("endpoint messages/s (sustained)", |s| Some(s.messages_per_second), true),
    (
        "most endpoint messages in a second",
        |s| Some(s.most_messages_in_a_second as f64),
        true,
    ),
    ("accept → message p50 (ms)", |s| Some(s.accept_to_message_p50), true),
    ("accept → message p99 (ms)", |s| Some(s.accept_to_message_p99), true),
    (
        "last message after last answer (ms)",
        |s| Some(s.last_message_after_last_answer),
        false,
    ),
    (
        "claim-publisher CPU per claim (ms)",
        |s| s.publisher_cpu_per_claim,
        false,
    ),
    (
        "claim-publisher DynamoDB calls per claim",
        |s| s.publisher_dynamodb_per_claim,
        false,
    ),
    ("claim-publisher peak RSS (MB)", |s| s.publisher_peak_rss_mb, false),
];

fn figure(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) if v.is_nan() => "–".to_owned(),
        Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// One markdown table per K: a row per figure, the baseline, ours and ours / baseline.
pub fn markdown(summaries: &[Summary], ours: &str) -> String {
    let mut out = String::new();
    let mut ks: Vec<usize> = summaries.iter().map(|s| s.instances).collect();
    ks.dedup();
    for k in ks {
        let find = |name: &str| summaries.iter().find(|s| s.instances == k && s.implementation == name);
        let (baseline, mine) = (find(BASELINE), find(ours));
        let rounds = mine.or(baseline).map_or(0, |s| s.rounds);
        let claims = mine.or(baseline).map_or(0, |s| s.claims / s.rounds.max(1));
        let _ = writeln!(out, "\n### K = {k} instances, {claims} claims × {rounds} rounds\n");
        let _ = writeln!(out, "| per claim | Python baseline | {ours} | {ours} / Python |");
        let _ = writeln!(out, "|---|---|---|---|");
        for (label, pick, ratio) in ROWS {
            let (b, m) = (baseline.and_then(pick), mine.and_then(pick));
            let quotient = match (b, m) {
                (Some(b), Some(m)) if *ratio && b.abs() > f64::EPSILON && !b.is_nan() && !m.is_nan() => {
                    format!("{:.2}", m / b)
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "| {label} | {} | {} | {quotient} |", figure(b), figure(m));
        }
    }
    out
}
