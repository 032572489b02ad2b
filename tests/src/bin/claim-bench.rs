//! Load benchmark of the claim path on the running local stack (`scripts/dev.sh bench`).
//!
//! Imports N fresh devices of the demo vendor (an `mqtt` vendor), then claims each once over HTTP
//! from C concurrent clients, as apps would: the API commits each claim and answers `pending`;
//! `claim-publisher`, fed by the table's stream, publishes the endpoint messages over its kept MQTT
//! connection (mutual TLS, PUBACK) and records them. Then reads each claim back until it is
//! `endpoint_published`. Prints latency percentiles and throughput of both requests, and accept →
//! published (the claim's own history: `pending` → `endpoint_published`) with the rate the messages
//! went out at. The figures describe this machine and the local stack (debug builds under `cargo
//! lambda watch`, which runs one invocation at a time per function), not AWS Lambda.
//!
//! Usage: claim-bench [--claims N] [--concurrency C] (`--help` describes the flags)

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use claim_tests::e2e::{Stack, DEMO_VENDOR};
use clap::Parser;

/// Load benchmark of the claim path on the running local stack: imports N fresh demo devices,
/// claims each once over HTTP from C concurrent clients, reads each claim back, prints latencies.
#[derive(Parser, Debug)]
#[command(name = "claim-bench", version, long_about = None)]
struct Cli {
    /// Devices imported and claimed (one claim each).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    claims: u32,
    /// Concurrent clients.
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // u32 always fits usize on the 32- and 64-bit targets this runs on.
    let (claims, concurrency) = (cli.claims as usize, cli.concurrency as usize);

    let stack = Arc::new(Stack::connect().await);
    println!("importing {claims} devices of {DEMO_VENDOR}…");
    let mut devices = Vec::with_capacity(claims);
    for _ in 0..claims {
        devices.push(stack.new_device(DEMO_VENDOR).await);
    }
    let devices = Arc::new(devices);

    // Warm-up: the first request of each function pays its start and the first TLS handshakes.
    let warm = stack.new_device(DEMO_VENDOR).await;
    let _ = stack.claim("bench-warmup", &warm).await;

    let (post, post_wall, statuses) = run(&stack, &devices, concurrency, |stack, i, thing| async move {
        let answer = stack.claim(&format!("bench-{i}"), &thing).await;
        (
            answer.status,
            answer.body["state"].as_str().unwrap_or("").to_owned(),
            answer.body["claim_id"].as_str().unwrap_or("").to_owned(),
        )
    })
    .await;
    let accepted = statuses.iter().filter(|(s, _, _)| *s == 202).count();
    let published = statuses
        .iter()
        .filter(|(_, state, _)| state == "endpoint_published")
        .count();
    let claim_ids: Arc<Vec<(usize, String)>> = Arc::new(
        statuses
            .iter()
            .enumerate()
            .map(|(i, (_, _, id))| (i, id.clone()))
            .collect(),
    );

    let read = |stack: Arc<Stack>, i: usize, claim_ids: Arc<Vec<(usize, String)>>| async move {
        let id = claim_ids.get(i).map(|(_, id)| id.clone()).unwrap_or_default();
        let answer = stack
            .call("GET", &format!("/v1/claims/{id}"), &format!("bench-{i}"), None)
            .await;
        let at = |state: &str| {
            answer.body["history"]
                .as_array()
                .and_then(|history| history.iter().find(|entry| entry["state"] == state))
                .and_then(|entry| entry["at"].as_str())
                .unwrap_or("")
                .to_owned()
        };
        (answer.status, at("pending"), at("endpoint_published"))
    };
    let ids = Arc::clone(&claim_ids);
    let (get, get_wall, mut get_statuses) = run(&stack, &devices, concurrency, move |stack, i, _thing| {
        read(stack, i, Arc::clone(&ids))
    })
    .await;
    let read_ok = get_statuses.iter().filter(|(s, _, _)| *s == 200).count();
    // Claims read before their message went out are read again until it has (30 s at most).
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let waiting: Vec<usize> = (0..get_statuses.len())
            .filter(|&i| get_statuses[i].2.is_empty())
            .collect();
        if waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in waiting {
            get_statuses[i] = read(Arc::clone(&stack), i, Arc::clone(&claim_ids)).await;
        }
    }
    let delivery = Delivery::of(&get_statuses);

    println!();
    println!("claims: {claims}, concurrency: {concurrency}");
    println!("POST /v1/claims      {}", summary(&post, post_wall));
    println!("  202: {accepted}/{claims}, answered endpoint_published (published inline): {published}/{claims}");
    println!("GET /v1/claims/{{id}}  {}", summary(&get, get_wall));
    println!("  200: {read_ok}/{claims}");
    println!("accept → published  {}", delivery.summary());
    if accepted == claims && read_ok == claims && delivery.published == claims {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

type Outcome = (u16, String, String);

/// When each claim's message went out, from the claims' histories (server clocks).
struct Delivery {
    published: usize,
    /// Accept → published, per claim.
    waits: Vec<Duration>,
    /// From the first claim accepted to the last message published.
    span: Duration,
}

impl Delivery {
    /// From `(status, pending at, endpoint_published at)` per claim (RFC 3339; empty: not yet).
    fn of(reads: &[Outcome]) -> Self {
        let parse = |at: &str| time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok();
        let pairs: Vec<(time::OffsetDateTime, time::OffsetDateTime)> = reads
            .iter()
            .filter_map(|(_, accepted, published)| Some((parse(accepted)?, parse(published)?)))
            .collect();
        let waits = pairs
            .iter()
            .map(|(accepted, published)| (*published - *accepted).unsigned_abs())
            .collect();
        let first = pairs.iter().map(|(accepted, _)| *accepted).min();
        let last = pairs.iter().map(|(_, published)| *published).max();
        let span = match (first, last) {
            (Some(first), Some(last)) => (last - first).unsigned_abs(),
            _ => Duration::ZERO,
        };
        Self {
            published: pairs.len(),
            waits,
            span,
        }
    }

    fn summary(&self) -> String {
        let rate = self.published as f64 / self.span.as_secs_f64().max(1e-9);
        let (p50, p99) = (percentile(&self.waits, 0.50), percentile(&self.waits, 0.99));
        format!(
            "{} published; p50 {p50:.1} ms, p99 {p99:.1} ms; {rate:.1} messages/s from the first accept to the last publish",
            self.published
        )
    }
}

/// The `q` quantile of `latencies`, in milliseconds (0 for none).
fn percentile(latencies: &[Duration], q: f64) -> f64 {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    if ms.is_empty() {
        return 0.0;
    }
    let index = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
    ms[index]
}

/// Runs `work` once per device from `concurrency` workers; returns per-request latencies, the wall
/// time, and the outcomes in device order.
async fn run<F, Fut>(
    stack: &Arc<Stack>,
    devices: &Arc<Vec<String>>,
    concurrency: usize,
    work: F,
) -> (Vec<Duration>, Duration, Vec<Outcome>)
where
    F: Fn(Arc<Stack>, usize, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (stack, devices, next, work) = (Arc::clone(stack), Arc::clone(devices), Arc::clone(&next), work.clone());
        tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(thing) = devices.get(i).cloned() else { break };
                let t = Instant::now();
                let outcome = work(Arc::clone(&stack), i, thing).await;
                done.push((i, t.elapsed(), outcome));
            }
            done
        })
    });
    let mut all = Vec::new();
    for worker in futures_join(workers).await {
        all.extend(worker);
    }
    let wall = started.elapsed();
    all.sort_by_key(|(i, _, _)| *i);
    let latencies = all.iter().map(|(_, d, _)| *d).collect();
    let outcomes = all.into_iter().map(|(_, _, o)| o).collect();
    (latencies, wall, outcomes)
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<Vec<T>>>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap_or_default());
    }
    out
}

fn summary(latencies: &[Duration], wall: Duration) -> String {
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.1} requests/s",
        percentile(latencies, 0.50),
        percentile(latencies, 0.90),
        percentile(latencies, 0.99),
        percentile(latencies, 1.0),
        latencies.len() as f64 / wall.as_secs_f64().max(1e-9)
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn counts_are_positive() {
        assert!(Cli::try_parse_from(["claim-bench", "--claims", "0"]).is_err());
        assert!(Cli::try_parse_from(["claim-bench", "--concurrency", "-1"]).is_err());
        let cli = Cli::try_parse_from(["claim-bench"]).unwrap();
        assert_eq!((cli.claims, cli.concurrency), (200, 8));
    }
}
