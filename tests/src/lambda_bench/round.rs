//! One round: K fresh instances of one implementation claim N fresh devices of a vendor of the
//! round's own — first one claim each (cold), then the rest as a burst over the warm instances —
//! while an MQTT observer times every endpoint message (`mqtt`; for `https`, moto's recording says
//! what arrived, and each answer that says `endpoint_published` came after its message was
//! confirmed) and proxies count the AWS calls; then the broker's log tells how the vendor's client
//! id connected.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    instance::{claim_all, Instance, Invocation, Runtime},
    publisher::StreamFedPublisher,
    Side, Transport,
};
use crate::mqtt::{connections_of, Observer};

/// What one round is: who answers, for which vendor, how many instances, which devices.
pub struct Plan<'a> {
    pub implementation: &'a str,
    pub runtime: Runtime,
    pub side: &'a Side,
    pub vendor: &'a str,
    pub client_id: &'a str,
    /// The DynamoDB Local process the side's table lives in, whose CPU time the round reports.
    pub engine_pid: Option<u32>,
    /// How the vendor publishes, and where the `https` publishes are recorded (moto's URL).
    pub transport: Transport,
    pub moto_url: &'a str,
    pub instances: usize,
    pub codes: Vec<String>,
    /// How long after the last answer the endpoint messages may still come.
    pub deliver_within: Duration,
    /// How often a claim answered `503` is sent again, as an app does (0: each claim is sent once,
    /// and the statuses are what the function answered; the benchmark).
    pub retries: u32,
}

/// What `claim-publisher` (one process, fed by the stream) did during a round.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PublisherUse {
    pub invocations: u64,
    pub records: u64,
    pub cpu_ms: f64,
    pub peak_rss_bytes: u64,
    pub dynamodb_calls: usize,
    pub secrets_calls: usize,
    /// Invocations that failed or timed out so far in the run (a timed-out process is replaced).
    pub failed_invocations_so_far: u64,
    /// Stream invocations so far whose answer left claims to the schedule (see
    /// [`super::publisher::PublisherCounts::short_answers`]).
    pub short_answers_so_far: Vec<serde_json::Value>,
    /// ERROR lines the process wrote so far in the run.
    pub error_lines_so_far: usize,
    /// `ClaimToPublishMs` values in its metric documents so far in the run (one per confirmed
    /// message, unless the collector dropped some).
    pub claim_to_publish_values_so_far: u64,
}

/// What one round measured (times in milliseconds).
#[derive(Serialize, Clone, Debug, Default)]
pub struct RoundResult {
    pub implementation: String,
    pub instances: usize,
    pub claims: usize,
    pub init_ms: Vec<f64>,
    pub first_ms: Vec<f64>,
    pub warm_ms: Vec<f64>,
    /// CPU time of all instances over the warm claims (user + system).
    pub warm_cpu_ms: f64,
    pub peak_rss_bytes: u64,
    /// CPU time of the side's own DynamoDB Local over the whole round, cold claims to the last
    /// message (the implementation's reads and writes, its publisher's and the stream reads
    /// included).
    pub engine_cpu_ms: f64,
    /// CPU time of this harness (emulators, counting proxies, observer) over the same span: it runs
    /// on the same cores as both sides.
    pub harness_cpu_ms: f64,
    /// The calls of the warm claims, by operation (`DynamoDB_20120810.GetItem`, …).
    pub warm_calls: BTreeMap<String, usize>,
    /// Each claim's (last) answer's status.
    pub statuses: BTreeMap<u64, usize>,
    /// Claims sent again after a `503` ([`Plan::retries`]).
    pub repeated_after_503: u32,
    /// Claims whose answer already said `endpoint_published`.
    pub answered_published: usize,
    /// Devices whose endpoint message the observer saw, and messages beyond one per device.
    pub delivered: usize,
    pub duplicates: usize,
    /// From the answer to the message, per delivered device (negative: published before answering).
    pub accept_to_message_ms: Vec<f64>,
    /// Messages over the time from the first to the last (the sustained rate), and the most in a second.
    pub messages_per_second: f64,
    pub most_messages_in_a_second: usize,
    /// From the last answer to the last message.
    pub last_message_after_last_answer_ms: f64,
    pub connects: usize,
    pub most_connects_per_second: usize,
    pub quota_violations: Vec<String>,
    pub publisher: Option<PublisherUse>,
    #[serde(skip)]
    pub invocations: Vec<Invocation>,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn tally(calls: Vec<String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        *counts.entry(call).or_default() += 1;
    }
    counts
}

impl RoundResult {
    pub fn warm_claims(&self) -> usize {
        self.warm_ms.len()
    }

    /// Calls per warm claim of the operations whose name starts with `prefix`.
    pub fn calls_per_warm_claim(&self, prefix: &str) -> f64 {
        let calls: usize = self
            .warm_calls
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, count)| count)
            .sum();
        calls as f64 / self.warm_claims().max(1) as f64
    }
}

/// Runs one round; `publisher` (with the proxies it goes through) is the stream-fed claim-publisher
/// of the implementation's table, if it has one.
pub async fn run(
    plan: Plan<'_>,
    observer: &Observer,
    broker_log: impl Fn() -> String,
    publisher: Option<(&StreamFedPublisher, &Side)>,
) -> RoundResult {
    let k = plan.instances.clamp(1, plan.codes.len().max(1));
    let engine_cpu = || plan.engine_pid.and_then(super::proc_stat::cpu_time).unwrap_or_default();
    let engine_before = engine_cpu();
    let harness_cpu = || super::proc_stat::cpu_time(std::process::id()).unwrap_or_default();
    let harness_before = harness_cpu();
    let publisher_start = publisher.map(|(p, side)| {
        side.dynamodb.calls.take();
        side.moto.calls.take();
        let (invocations, records) = p.counts.snapshot();
        (p.cpu(), invocations, records)
    });
    // One after another: on Lambda each execution environment starts on a CPU share of its own, so
    // K processes starting at once on this machine's 2 cores would measure the machine's
    // contention, not a function's init. The claims then run concurrently.
    let mut instances: Vec<Instance> = Vec::with_capacity(k);
    for _ in 0..k {
        instances.push(Instance::start(&plan.runtime).await);
    }
    let (cold_codes, warm_codes) = plan.codes.split_at(k);
    let retries = plan.retries;
    let (first, first_repeats): (Vec<Invocation>, Vec<u32>) =
        futures::future::join_all(instances.iter_mut().zip(cold_codes).enumerate().map(
            |(i, (instance, code))| async move {
                instance
                    .claim_retrying(&format!("{}-cold-{i}", plan.vendor), code, retries)
                    .await
            },
        ))
        .await
        .into_iter()
        .unzip();
    plan.side.dynamodb.calls.take();
    plan.side.moto.calls.take();
    let cpu_before: Duration = instances.iter().map(Instance::cpu).sum();
    let (warm, warm_repeats) = claim_all(&mut instances, warm_codes, &format!("{}-user", plan.vendor), retries).await;
    let cpu_after: Duration = instances.iter().map(Instance::cpu).sum();
    let mut warm_calls = tally(plan.side.dynamodb.calls.take());
    warm_calls.extend(tally(plan.side.moto.calls.take()));
    let mut result = RoundResult {
        implementation: plan.implementation.to_owned(),
        instances: k,
        claims: plan.codes.len(),
        init_ms: instances.iter().map(|i| ms(i.init)).collect(),
        first_ms: first.iter().map(|i| ms(i.latency)).collect(),
        warm_ms: warm.iter().map(|i| ms(i.latency)).collect(),
        warm_cpu_ms: ms(cpu_after.saturating_sub(cpu_before)),
        peak_rss_bytes: instances.iter().map(Instance::peak_rss).max().unwrap_or_default(),
        warm_calls,
        repeated_after_503: first_repeats.iter().sum::<u32>() + warm_repeats,
        ..RoundResult::default()
    };
    drop(instances);
    let invocations: Vec<Invocation> = first.into_iter().chain(warm).collect();
    for invocation in &invocations {
        *result.statuses.entry(invocation.status).or_default() += 1;
    }
    result.answered_published = invocations.iter().filter(|i| i.state == "endpoint_published").count();
    match plan.transport {
        Transport::Mqtt => deliveries(&mut result, &invocations, observer, &plan).await,
        Transport::Https => https_deliveries(&mut result, &invocations, &plan).await,
    }
    result.engine_cpu_ms = ms(engine_cpu().saturating_sub(engine_before));
    result.harness_cpu_ms = ms(harness_cpu().saturating_sub(harness_before));
    let connections = connections_of(&broker_log(), plan.client_id);
    result.connects = connections.connects.len();
    result.most_connects_per_second = connections.most_per_second();
    result.quota_violations = connections.quota_violations();
    if let (Some((publisher, side)), Some((cpu, invocations, records))) = (publisher, publisher_start) {
        let (now_invocations, now_records) = publisher.counts.snapshot();
        let calls = side.dynamodb.calls.take().len();
        let secrets = side
            .moto
            .calls
            .take()
            .iter()
            .filter(|c| c.starts_with("secretsmanager."))
            .count();
        result.publisher = Some(PublisherUse {
            invocations: now_invocations - invocations,
            records: now_records - records,
            cpu_ms: ms(publisher.cpu().saturating_sub(cpu)),
            peak_rss_bytes: publisher.peak_rss(),
            dynamodb_calls: calls,
            secrets_calls: secrets,
            failed_invocations_so_far: publisher
                .counts
                .failed_invocations
                .load(std::sync::atomic::Ordering::Relaxed),
            short_answers_so_far: publisher
                .counts
                .short_answers
                .lock()
                .map(|answers| answers.clone())
                .unwrap_or_default(),
            error_lines_so_far: publisher.counts.error_lines.lock().map_or(0, |lines| lines.len()),
            claim_to_publish_values_so_far: publisher
                .counts
                .claim_to_publish_values
                .load(std::sync::atomic::Ordering::Relaxed),
        });
    }
    result.invocations = invocations;
    result
}

/// Waits for the endpoint messages of the accepted claims (at most `deliver_within` after the last
/// answer), then times them.
async fn deliveries(result: &mut RoundResult, invocations: &[Invocation], observer: &Observer, plan: &Plan<'_>) {
    let accepted: HashMap<String, Instant> = invocations
        .iter()
        // 200: a repeat after a 503 found the claim its first try made.
        .filter(|i| matches!(i.status, 200 | 202))
        .map(|i| (format!("{}/expresslink_config", i.code), i.answered))
        .collect();
    let prefix = format!("{}-", plan.vendor);
    let last_answer = invocations
        .iter()
        .map(|i| i.answered)
        .max()
        .unwrap_or_else(Instant::now);
    let arrivals = loop {
        let arrivals = observer.arrivals(&prefix);
        let seen = accepted
            .keys()
            .filter(|topic| arrivals.iter().any(|(t, _)| t == *topic))
            .count();
        if seen == accepted.len() || last_answer.elapsed() > plan.deliver_within {
            // A duplicate may still be on its way: a moment more.
            tokio::time::sleep(Duration::from_millis(500)).await;
            break observer.arrivals(&prefix);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut first_arrival: HashMap<&str, Instant> = HashMap::new();
    for (topic, at) in &arrivals {
        first_arrival.entry(topic.as_str()).or_insert(*at);
    }
    result.delivered = first_arrival.len();
    result.duplicates = arrivals.len() - first_arrival.len();
    result.accept_to_message_ms = first_arrival
        .iter()
        .filter_map(|(topic, at)| {
            let answered = accepted.get(*topic)?;
            Some(match at.checked_duration_since(*answered) {
                Some(after) => ms(after),
                None => -ms(answered.duration_since(*at)),
            })
        })
        .collect();
    let times: Vec<Instant> = arrivals.iter().map(|(_, at)| *at).collect();
    message_rate(result, &times);
    if let Some((_, last)) = arrivals.last() {
        result.last_message_after_last_answer_ms = match last.checked_duration_since(last_answer) {
            Some(after) => ms(after),
            None => -ms(last_answer.duration_since(*last)),
        };
    }
}

/// The messages' rate from their times, in order: sustained (over the time from the first to the
/// last) and the most within one second counted from the first.
fn message_rate(result: &mut RoundResult, times: &[Instant]) {
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return;
    };
    let span = last.duration_since(first).as_secs_f64();
    result.messages_per_second = if span > 0.0 {
        (times.len() - 1) as f64 / span
    } else {
        0.0
    };
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for at in times {
        *per_second.entry(at.duration_since(first).as_secs()).or_default() += 1;
    }
    result.most_messages_in_a_second = per_second.values().copied().max().unwrap_or_default();
}

/// `https`: what moto recorded for the round's vendor, and the message rate from the answers that
/// said `endpoint_published` (each was confirmed by the endpoint before the answer, so its message
/// counts as 0 ms after the answer and at most at the answer's time).
async fn https_deliveries(result: &mut RoundResult, invocations: &[Invocation], plan: &Plan<'_>) {
    let prefix = format!("{}-", plan.vendor);
    let recorded = crate::iotdata::moto_publishes_where(plan.moto_url, |topic| topic.starts_with(&prefix))
        .await
        .unwrap_or_else(|err| panic!("moto's recording: {err}"));
    let mut topics: Vec<&str> = recorded.iter().map(|publish| publish.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    result.delivered = topics.len();
    result.duplicates = recorded.len() - topics.len();
    let mut published: Vec<Instant> = invocations
        .iter()
        .filter(|i| i.state == "endpoint_published")
        .map(|i| i.answered)
        .collect();
    published.sort_unstable();
    result.accept_to_message_ms = vec![0.0; published.len()];
    message_rate(result, &published);
}
