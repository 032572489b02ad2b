//! `claim-publisher` as deployed with a stream trigger: ONE process (reserved concurrency 1) under
//! the Runtime API emulator, invoked with the table's change stream as the Lambda event source
//! mapping delivers it — the template's filter applied (claims written owing their message),
//! batches of up to 1000 records per shard, one invocation at a time, a shard
//! polled four times a second when idle, a partial batch response (`batchItemFailures`) delivered
//! again from the failed record. (Before claim-publisher reads stream records, it drains everything
//! due on any event: that works too, only slower.)

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::json;

use super::instance::{Instance, Runtime};
use crate::streams::{is_owed_claim, left_after, TableStream};

/// How often the event source mapping polls an idle shard (about four times a second on AWS).
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Records read per shard and poll, and so at most per invocation (template.yaml's `BatchSize`
/// of `OwedClaims`; DynamoDB Streams gives at most 1000 a read).
const BATCH_SIZE: i32 = 1000;

/// The function's timeout (template.yaml: 60 s; a drain's budget is 45 s).
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What the publisher process did so far.
#[derive(Default, Debug)]
pub struct PublisherCounts {
    pub invocations: AtomicU64,
    pub records: AtomicU64,
    pub failed_invocations: AtomicU64,
    /// Answers of stream invocations that left claims of their batch to the schedule (a storage
    /// error, a busy vendor lease, the budget run out), with the function's last warnings: what a
    /// failed run shows first.
    pub short_answers: Mutex<Vec<serde_json::Value>>,
    /// The ERROR lines the process wrote.
    pub error_lines: Mutex<Vec<serde_json::Value>>,
    /// Values of `ClaimToPublishMs` in its metric documents (the total, without dimensions): one
    /// per message the staging endpoint confirmed, if no value was dropped.
    pub claim_to_publish_values: AtomicU64,
}

impl PublisherCounts {
    /// Takes in what the process wrote since the last time.
    fn read_output(&self, lines: &[serde_json::Value]) {
        for line in lines {
            if line["level"] == "ERROR" {
                lock(&self.error_lines).push(line.clone());
            }
            let dimensionless = line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
                .as_array()
                .is_some_and(Vec::is_empty);
            if let (true, Some(values)) = (dimensionless, line["ClaimToPublishMs"].as_array()) {
                self.claim_to_publish_values
                    .fetch_add(values.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Invocations and records so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.invocations.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
    }
}

pub struct StreamFedPublisher {
    pub counts: Arc<PublisherCounts>,
    /// The process now (a new one after an invocation timed out, as Lambda replaces it).
    pid: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamFedPublisher {
    /// Starts the publisher (`runtime`) and feeds it the stream of `table`.
    pub async fn start(runtime: &Runtime, mut stream: TableStream) -> Self {
        let mut instance = Instance::start(runtime).await;
        let pid = Arc::new(Mutex::new(instance.function.pid()));
        let counts = Arc::new(PublisherCounts::default());
        let (counted, runtime, current_pid) = (counts.clone(), runtime.clone(), pid.clone());
        let task = tokio::spawn(async move {
            let mut read_up_to = 0;
            loop {
                // What the process wrote (its metric documents come after its answers).
                let (lines, end) = instance.function.json_lines_after(read_up_to);
                read_up_to = end;
                counted.read_output(&lines);
                let batches = stream.next_batches(BATCH_SIZE).await;
                let idle = batches.is_empty();
                for records in batches {
                    // The mapping's filter: records that do not match are dropped, not handed over.
                    let mut records: Vec<_> = records.into_iter().filter(is_owed_claim).collect();
                    if records.is_empty() {
                        continue;
                    }
                    counted.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                    while !records.is_empty() {
                        counted.invocations.fetch_add(1, Ordering::Relaxed);
                        let event = json!({ "Records": records }).to_string().into_bytes();
                        let answer = instance.invoke_within(event, FUNCTION_TIMEOUT).await;
                        match answer.get("invocation_failed") {
                            // Lambda ends the process at its timeout, and a new one gets the batch.
                            Some(failure) if failure == "timeout" => {
                                counted.failed_invocations.fetch_add(1, Ordering::Relaxed);
                                instance = Instance::start(&runtime).await;
                                read_up_to = 0;
                                *lock(&current_pid) = instance.function.pid();
                                continue;
                            }
                            Some(_) => {
                                counted.failed_invocations.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                continue;
                            }
                            None => {}
                        }
                        if leaves_claims_owed(&answer) {
                            // With the function's last warnings, which say what it waited for.
                            let warnings: Vec<serde_json::Value> = instance
                                .function
                                .json_lines()
                                .into_iter()
                                .filter(|line| matches!(line["level"].as_str(), Some("WARN" | "ERROR")))
                                .rev()
                                .take(8)
                                .collect();
                            lock(&counted.short_answers).push(json!({ "answer": answer, "warnings": warnings }));
                        }
                        records = left_after(records, &answer);
                    }
                }
                if idle {
                    tokio::time::sleep(POLL_EVERY).await;
                }
            }
        });
        Self { counts, pid, task }
    }

    fn pid(&self) -> u32 {
        *lock(&self.pid)
    }

    pub fn cpu(&self) -> Duration {
        super::proc_stat::cpu_time(self.pid()).unwrap_or_default()
    }

    pub fn peak_rss(&self) -> u64 {
        super::proc_stat::peak_rss(self.pid()).unwrap_or_default()
    }
}

/// Whether a stream invocation's answer says some owed claims of its batch were not attempted.
fn leaves_claims_owed(answer: &serde_json::Value) -> bool {
    answer.get("error").is_some()
        || answer["busy_vendors"].as_u64().is_some_and(|busy| busy > 0)
        || answer["out_of_time"].as_bool() == Some(true)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for StreamFedPublisher {
    /// Ends the feeding task, which owns (and so stops) the process.
    fn drop(&mut self) {
        self.task.abort();
    }
}
