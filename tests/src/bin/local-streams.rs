//! The ownership table's change stream, delivered to a function (`lifecycle-events`,
//! `claim-publisher`) locally as a Lambda event source mapping does on AWS: DynamoDB Local's stream is read shard by shard, in order, and
//! each batch goes to the function as a DynamoDB Streams event. A partial batch response
//! (`batchItemFailures`) makes it deliver again from the first failed record; a failed invocation,
//! the whole batch again, after a pause. Nothing is skipped, so nothing is lost.
//!
//! Usage: local-streams --table <name> --invoke <function invocation URL> [--batch N] [--latest]
//! (AWS settings from the environment: `source .local/endpoints.env`.)

use std::time::Duration;

use claim_tests::streams::{left_after, TableStream};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Options {
    /// The ownership table.
    #[arg(long)]
    table: String,
    /// Invoke URL of the function (the Lambda Invoke API of cargo lambda watch).
    #[arg(long, value_name = "URL")]
    invoke: String,
    /// Records per batch (the event source mapping's BatchSize; DynamoDB Streams gives at most
    /// 1000).
    #[arg(long, default_value_t = 100)]
    batch: i32,
    /// Start at the stream's end (StartingPosition LATEST) rather than its oldest record.
    #[arg(long)]
    latest: bool,
}

const IDLE: Duration = Duration::from_millis(250);
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Delivers `records` until the function takes them all.
async fn deliver(http: &reqwest::Client, options: &Options, mut records: Vec<Value>) {
    while !records.is_empty() {
        let answer = http
            .post(&options.invoke)
            .json(&json!({ "Records": records }))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        let body: Option<Value> = match answer {
            Ok(answer) if answer.status().is_success() => answer.json().await.ok(),
            Ok(answer) => {
                println!("the function failed ({}); delivering the batch again", answer.status());
                None
            }
            Err(err) => {
                println!("the function is unreachable ({err}); delivering the batch again");
                None
            }
        };
        let Some(body) = body else {
            tokio::time::sleep(AFTER_FAILURE).await;
            continue;
        };
        let sent = records.len();
        records = left_after(records, &body);
        if records.is_empty() {
            println!("delivered {sent} records");
            return;
        }
        println!(
            "the function asked for the batch again from record {}",
            sent - records.len()
        );
        tokio::time::sleep(AFTER_FAILURE).await;
    }
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut stream = TableStream::open(&aws, std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok(), &options.table).await;
    if options.latest {
        stream = stream.from_its_end();
    }
    let http = reqwest::Client::new();
    println!("watching {}", stream.arn());
    loop {
        let batches = stream.next_batches(options.batch).await;
        let busy = !batches.is_empty();
        for records in batches {
            deliver(&http, &options, records).await;
        }
        if !busy {
            tokio::time::sleep(IDLE).await;
        }
    }
}
