//! The ownership table's change stream, delivered to a function (`lifecycle-events`,
//! `claim-publisher`) locally as a Lambda event source mapping does on AWS: DynamoDB Local's stream is read shard by shard, in order, and
//! each batch goes to the function as a DynamoDB Streams event. A partial batch response
//! (`batchItemFailures`) makes it deliver again from the first failed record; a failed invocation,
//! the whole batch again, after a pause. Nothing is skipped, so nothing is lost.
//!
//! Usage: local-streams --table <name> --invoke <function invocation URL> [--batch N] [--latest]
//! (AWS settings from the environment: `source .local/endpoints.env`.)

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodbstreams::{
    types::{Record, ShardIteratorType},
    Client,
};
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

/// A record as Lambda hands it to the function.
fn lambda_record(record: &Record, stream_arn: &str, region: &str) -> Value {
    let change = record.dynamodb();
    let image = |item: Option<&HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>| {
        item.map(|item| serde_json::to_value(serde_dynamo::Item::from(item.clone())).unwrap_or(Value::Null))
    };
    let created = change
        .and_then(|c| c.approximate_creation_date_time())
        .map_or(0.0, |at| at.as_secs_f64());
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|name| name.as_str()),
        "eventVersion": record.event_version(),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "eventSourceARN": stream_arn,
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "Keys": image(change.and_then(|c| c.keys.as_ref())),
            "NewImage": image(change.and_then(|c| c.new_image.as_ref())),
            "OldImage": image(change.and_then(|c| c.old_image.as_ref())),
            "SequenceNumber": change.and_then(|c| c.sequence_number()),
            "SizeBytes": change.and_then(|c| c.size_bytes()),
            "StreamViewType": change.and_then(|c| c.stream_view_type()).map(|v| v.as_str()),
        },
    })
}

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
        let failed = body["batchItemFailures"][0]["itemIdentifier"]
            .as_str()
            .map(str::to_owned);
        let Some(failed) = failed else {
            println!("delivered {} records", records.len());
            return;
        };
        let from = records
            .iter()
            .position(|record| record["dynamodb"]["SequenceNumber"] == failed.as_str())
            .unwrap_or(0);
        println!("the function asked for the batch again from record {from}");
        records.drain(..from);
        tokio::time::sleep(AFTER_FAILURE).await;
    }
}

async fn stream_arn(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> String {
    loop {
        match dynamodb.describe_table().table_name(table).send().await {
            Ok(out) => {
                if let Some(arn) = out.table().and_then(|t| t.latest_stream_arn()) {
                    return arn.to_owned();
                }
                println!("table {table} has no stream; waiting");
            }
            Err(err) => println!(
                "waiting for table {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&err)
            ),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = aws.region().map(ToString::to_string).unwrap_or_default();
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    // DynamoDB Streams has no endpoint variable of its own: it is served by DynamoDB Local.
    let mut streams_config = aws_sdk_dynamodbstreams::config::Builder::from(&aws);
    streams_config.set_endpoint_url(std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok());
    let streams_config = streams_config.build();
    let streams = Client::from_conf(streams_config);
    let http = reqwest::Client::new();
    let arn = stream_arn(&dynamodb, &options.table).await;
    println!("watching {arn}");
    // Shard id → its next iterator (None once the shard is closed and read to its end).
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    let mut first_round = true;
    loop {
        match streams.describe_stream().stream_arn(&arn).send().await {
            Ok(out) => {
                for shard in out.stream_description().map(|d| d.shards()).unwrap_or_default() {
                    let Some(id) = shard.shard_id() else { continue };
                    if iterators.contains_key(id) {
                        continue;
                    }
                    let iterator = streams
                        .get_shard_iterator()
                        .stream_arn(&arn)
                        .shard_id(id)
                        // Only shards open at start begin at their end; a shard that opens later
                        // is read whole, as the mapping does.
                        .shard_iterator_type(if options.latest && first_round {
                            ShardIteratorType::Latest
                        } else {
                            ShardIteratorType::TrimHorizon
                        })
                        .send()
                        .await
                        .ok()
                        .and_then(|out| out.shard_iterator().map(str::to_owned));
                    if iterator.is_some() {
                        iterators.insert(id.to_owned(), iterator);
                    }
                }
            }
            Err(err) => println!(
                "describe_stream: {}",
                aws_sdk_dynamodbstreams::error::DisplayErrorContext(&err)
            ),
        }
        first_round = false;
        let mut busy = false;
        let mut shards: Vec<String> = iterators.keys().cloned().collect();
        shards.sort();
        for shard in shards {
            let Some(Some(iterator)) = iterators.get(&shard).cloned() else {
                continue;
            };
            match streams
                .get_records()
                .shard_iterator(&iterator)
                .limit(options.batch)
                .send()
                .await
            {
                Ok(out) => {
                    let records: Vec<Value> = out
                        .records()
                        .iter()
                        .map(|record| lambda_record(record, &arn, &region))
                        .collect();
                    if !records.is_empty() {
                        busy = true;
                        deliver(&http, &options, records).await;
                    }
                    iterators.insert(shard, out.next_shard_iterator().map(str::to_owned));
                }
                Err(err) => println!(
                    "get_records: {}",
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(&err)
                ),
            }
        }
        if !busy {
            tokio::time::sleep(IDLE).await;
        }
    }
}
