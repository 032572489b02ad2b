//! The forwarded events queue delivered to `provisioning-events` locally as the Lambda SQS event
//! source mapping does on AWS (with `ReportBatchItemFailures`): up to ten messages per invocation;
//! the messages the answer's `batchItemFailures` names stay on the queue and come back after its
//! visibility timeout, the others are deleted; a failed invocation leaves the whole batch. After the
//! queue's maxReceiveCount, SQS (moto) moves a message to the dead-letter queue.
//!
//! Usage: local-sqs-trigger --invoke <provisioning-events invocation URL>
//! (AWS settings from the environment: `source .local/endpoints.env`.)

use std::{collections::HashSet, time::Duration};

use claim_tests::forwarding::{failed_message_ids, ForwardedQueue};
use clap::Parser;
use serde_json::Value;

/// Play the SQS event source mapping of provisioning-events on the local forwarded events queue.
#[derive(Parser)]
#[command(name = "local-sqs-trigger", version, long_about = None)]
struct Options {
    /// Invoke URL of provisioning-events (the Lambda Invoke API of cargo lambda watch).
    #[arg(long, value_name = "URL")]
    invoke: String,
}

const AFTER_ERROR: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let queue = match ForwardedQueue::ensure().await {
        Ok(queue) => queue,
        Err(err) => {
            eprintln!("error: the forwarded events queue: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let http = reqwest::Client::new();
    println!("watching {} for forwarded events", queue.url);
    loop {
        let messages = match queue.receive(Duration::from_secs(1)).await {
            Ok(messages) if messages.is_empty() => continue,
            Ok(messages) => messages,
            Err(err) => {
                println!("the queue is unreachable ({err})");
                tokio::time::sleep(AFTER_ERROR).await;
                continue;
            }
        };
        let answer = http
            .post(&options.invoke)
            .json(&queue.lambda_event(&messages))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        let failed = match answer {
            Ok(answer) if answer.status().is_success() => {
                let body = answer.json::<Value>().await.unwrap_or(Value::Null);
                let failed = failed_message_ids(&body);
                if failed.is_none() {
                    println!("provisioning-events answered no batch response ({body}); the batch stays on the queue");
                }
                failed
            }
            Ok(answer) => {
                println!(
                    "provisioning-events failed ({}); the batch stays on the queue",
                    answer.status()
                );
                None
            }
            Err(err) => {
                println!("provisioning-events unreachable ({err}); the batch stays on the queue");
                None
            }
        };
        let Some(failed) = failed.map(|ids| ids.into_iter().collect::<HashSet<_>>()) else {
            tokio::time::sleep(AFTER_ERROR).await;
            continue;
        };
        let done: Vec<&str> = messages
            .iter()
            .filter(|message| !message.message_id().is_some_and(|id| failed.contains(id)))
            .filter_map(|message| message.receipt_handle())
            .collect();
        match queue.delete(&done).await {
            Ok(()) => println!(
                "{} forwarded event(s) -> provisioning-events: {} done, {} to deliver again",
                messages.len(),
                done.len(),
                failed.len()
            ),
            Err(err) => println!("delivered, but not deleted ({err}): they will come again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Options::command().debug_assert();
    }
}
