//! Events forwarded from an OEM endpoint in another account and region, locally: the claim stack's
//! forwarded events queue in moto (with its dead-letter queue, as `template.yaml` makes them), what
//! the forwarder's rules put on it (`infra/event-forwarder.yaml`: the event plus its origin), and
//! the event source mapping that hands its messages to `provisioning-events` in batches.

use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};

use crate::lifecycle::{create_queue, local_sqs};

/// The local stack's other OEM account (its second endpoint's, in eu-west-1), allowed to forward.
pub const FORWARDING_ACCOUNT: &str = "210987654321";
/// Its region.
pub const FORWARDING_REGION: &str = "eu-west-1";
/// The queue's name locally (`FORWARDED_EVENTS_QUEUE` in `.local/endpoints.env`).
pub const QUEUE: &str = "expresslink-forwarded-events";
/// Where messages go after [`MAX_RECEIVES`] failed deliveries.
pub const DEAD_LETTER_QUEUE: &str = "expresslink-forwarded-events-dead-letters";
/// The template's `maxReceiveCount`.
pub const MAX_RECEIVES: u32 = 5;
/// Shorter than the template's 60 s, so that a retried message comes back within a test.
pub const VISIBILITY_TIMEOUT_SECONDS: u32 = 5;

fn why<E: std::error::Error>(err: E) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(err).to_string()
}

/// An event as the forwarder's rules send it: what the stack's rule SQL gives, plus the origin.
pub fn forwarded(mut event: Value, account: &str, region: &str) -> Value {
    event["forwarded_from_account"] = json!(account);
    event["forwarded_from_region"] = json!(region);
    event
}

/// The forwarded events queue in moto.
pub struct ForwardedQueue {
    sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub arn: String,
}

impl ForwardedQueue {
    /// Creates the queue and its dead-letter queue unless they exist (the same attributes again
    /// change nothing).
    pub async fn ensure() -> Result<Self, String> {
        let sqs = local_sqs().await;
        let dead_letters = create_queue(&sqs, DEAD_LETTER_QUEUE, Vec::new()).await?;
        let redrive = json!({"deadLetterTargetArn": dead_letters.1, "maxReceiveCount": MAX_RECEIVES});
        let attributes = vec![
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            (
                QueueAttributeName::VisibilityTimeout,
                VISIBILITY_TIMEOUT_SECONDS.to_string(),
            ),
        ];
        let (url, arn) = create_queue(&sqs, QUEUE, attributes).await?;
        Ok(Self { sqs, url, arn })
    }

    /// Sends one event, as a forwarding rule's SQS action does (the body is the JSON, not base64).
    pub async fn send(&self, event: &Value) -> Result<(), String> {
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(event.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(why)
    }

    /// Up to ten messages, waiting up to `wait` for the first.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<Message>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(1))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(why)?;
        Ok(out.messages().to_vec())
    }

    /// Deletes the messages with these receipt handles.
    pub async fn delete(&self, handles: &[&str]) -> Result<(), String> {
        if handles.is_empty() {
            return Ok(());
        }
        let entries = handles
            .iter()
            .enumerate()
            .map(|(index, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .map_err(|err| err.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.sqs
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map(|_| ())
            .map_err(why)
    }

    /// The invocation the SQS event source mapping makes for these messages.
    pub fn lambda_event(&self, messages: &[Message]) -> Value {
        let records: Vec<Value> = messages
            .iter()
            .map(|message| {
                let attributes: serde_json::Map<String, Value> = message
                    .attributes()
                    .map(|all| {
                        all.iter()
                            .map(|(key, value)| (key.as_str().to_owned(), json!(value)))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": message.message_id(),
                    "receiptHandle": message.receipt_handle(),
                    "body": message.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": message.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        json!({ "Records": records })
    }
}

/// The message ids a partial batch response asks to deliver again; `None` when the answer is not one
/// (then, as Lambda does, the whole batch counts as failed).
pub fn failed_message_ids(answer: &Value) -> Option<Vec<String>> {
    answer
        .get("batchItemFailures")?
        .as_array()?
        .iter()
        .map(|failure| failure.get("itemIdentifier")?.as_str().map(str::to_owned))
        .collect()
}
