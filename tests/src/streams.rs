//! A table's change stream as the Lambda DynamoDB event source mapping reads it: DynamoDB Local's
//! stream of the table, shard by shard, from its start, in order, as batches of records shaped as
//! Lambda hands them to a function (`{"Records": [...]}`). `local-streams` delivers them to
//! `lifecycle-events`; the Lambda-mode benchmark and the burst test to `claim-publisher`.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodbstreams::{
    error::ProvideErrorMetadata,
    types::{Record, ShardIteratorType},
    Client,
};
use serde_json::{json, Value};

/// A record as Lambda hands it to the function.
pub fn lambda_record(record: &Record, stream_arn: &str, region: &str) -> Value {
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

/// What is left to deliver of `records` after the function answered `answer`: nothing, or (a
/// partial batch response, `batchItemFailures`) the records from the first failed one on, as the
/// event source mapping delivers them again.
pub fn left_after(mut records: Vec<Value>, answer: &Value) -> Vec<Value> {
    let Some(failed) = answer["batchItemFailures"][0]["itemIdentifier"].as_str() else {
        return Vec::new();
    };
    let from = records
        .iter()
        .position(|record| record["dynamodb"]["SequenceNumber"] == failed)
        .unwrap_or(0);
    records.drain(..from);
    records
}

/// Whether the event source mapping of `claim-publisher` hands this record over: template.yaml's
/// `OwedClaims` filter (`INSERT` or `MODIFY` of a claim whose new image has `next_publish_at`).
pub fn is_owed_claim(record: &Value) -> bool {
    let image = &record["dynamodb"]["NewImage"];
    matches!(record["eventName"].as_str(), Some("INSERT" | "MODIFY"))
        && image["entity"]["S"] == "claim"
        && image["next_publish_at"]["N"].is_string()
}

/// The stream of one table, read from its start (or, [`TableStream::from_its_end`], from what is
/// written after it was opened).
pub struct TableStream {
    streams: Client,
    arn: String,
    region: String,
    /// Shard id → its next iterator (None once the shard is closed and read to its end).
    iterators: HashMap<String, Option<String>>,
    /// Shard id → the sequence number of the last record read from it.
    read_up_to: HashMap<String, String>,
    /// The shards open when it is first read begin at their end (StartingPosition LATEST); a shard
    /// that opens later is read whole, as the event source mapping does.
    at_end: bool,
}

impl TableStream {
    /// The stream of `table`, waiting until the table exists and has one. `aws` is the SDK
    /// configuration of DynamoDB; `dynamodb_endpoint` where DynamoDB Local listens (DynamoDB Streams
    /// has no endpoint variable of its own there: DynamoDB Local serves it).
    pub async fn open(aws: &aws_config::SdkConfig, dynamodb_endpoint: Option<String>, table: &str) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let mut config = aws_sdk_dynamodbstreams::config::Builder::from(aws);
        config.set_endpoint_url(dynamodb_endpoint);
        let region = aws.region().map(ToString::to_string).unwrap_or_default();
        let arn = loop {
            match dynamodb.describe_table().table_name(table).send().await {
                Ok(out) => match out.table().and_then(|t| t.latest_stream_arn()) {
                    Some(arn) => break arn.to_owned(),
                    None => println!("table {table} has no stream; waiting"),
                },
                Err(err) => println!(
                    "waiting for table {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&err)
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        Self {
            streams: Client::from_conf(config.build()),
            arn,
            region,
            iterators: HashMap::new(),
            read_up_to: HashMap::new(),
            at_end: false,
        }
    }

    /// Starts at the stream's end: only records written from now on are read.
    #[must_use]
    pub fn from_its_end(mut self) -> Self {
        self.at_end = true;
        self
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The next batch of at most `limit` records of each shard that has any (shards in order of
    /// their ids); empty when nothing new was written. Errors are printed and the read tried again
    /// next time.
    pub async fn next_batches(&mut self, limit: i32) -> Vec<Vec<Value>> {
        self.find_new_shards().await;
        let mut shards: Vec<String> = self.iterators.keys().cloned().collect();
        shards.sort();
        let mut batches = Vec::new();
        for shard in shards {
            let Some(Some(iterator)) = self.iterators.get(&shard).cloned() else {
                continue;
            };
            match self
                .streams
                .get_records()
                .shard_iterator(&iterator)
                .limit(limit)
                .send()
                .await
            {
                Ok(out) => {
                    let records: Vec<Value> = out
                        .records()
                        .iter()
                        .map(|record| lambda_record(record, &self.arn, &self.region))
                        .collect();
                    if let Some(last) = out.records().last().and_then(|r| r.dynamodb()?.sequence_number()) {
                        self.read_up_to.insert(shard.clone(), last.to_owned());
                    }
                    if !records.is_empty() {
                        batches.push(records);
                    }
                    self.iterators
                        .insert(shard, out.next_shard_iterator().map(str::to_owned));
                }
                Err(err) => {
                    // DynamoDB Local sometimes refuses an iterator it handed out
                    // (TrimmedDataAccessException, expired iterators): a new one, after what was read.
                    println!(
                        "get_records on {shard}: {}; reading on with a new iterator",
                        err.code().unwrap_or("error")
                    );
                    self.iterators.remove(&shard);
                }
            }
        }
        batches
    }

    async fn find_new_shards(&mut self) {
        let described = self.streams.describe_stream().stream_arn(&self.arn).send().await;
        let out = match described {
            Ok(out) => out,
            Err(err) => {
                println!(
                    "describe_stream: {}",
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(&err)
                );
                return;
            }
        };
        for shard in out.stream_description().map(|d| d.shards()).unwrap_or_default() {
            let Some(id) = shard.shard_id() else { continue };
            if self.iterators.contains_key(id) {
                continue;
            }
            let request = self.streams.get_shard_iterator().stream_arn(&self.arn).shard_id(id);
            let request = match self.read_up_to.get(id) {
                Some(last) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(last),
                None if self.at_end => request.shard_iterator_type(ShardIteratorType::Latest),
                None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let iterator = request
                .send()
                .await
                .ok()
                .and_then(|out| out.shard_iterator().map(str::to_owned));
            if iterator.is_some() {
                self.iterators.insert(id.to_owned(), iterator);
            }
        }
        self.at_end = false;
    }
}
