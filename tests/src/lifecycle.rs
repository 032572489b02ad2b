//! The lifecycle events' bus locally (EventBridge in moto) and sinks that record what reaches it:
//! an SQS queue per sink, fed by a rule with the sink's own event pattern, as an OEM's consumer
//! would subscribe on AWS. A sink per test (its pattern names the test's devices) keeps parallel
//! tests from reading each other's events.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};

use crate::local_sdk_config;

/// The events' `source` (the template's default).
pub const SOURCE: &str = "expresslink.claims";

/// An SDK error with its causes, as one line.
fn why<E: std::error::Error>(err: E) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(err).to_string()
}

fn moto() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned())
}

pub async fn local_eventbridge() -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(&local_sdk_config(&moto()).await)
}

pub async fn local_sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&local_sdk_config(&moto()).await)
}

/// The bus the stack's `EVENT_BUS_NAME` names (from `.local/endpoints.env`).
pub fn bus_name() -> String {
    std::env::var("EVENT_BUS_NAME").unwrap_or_else(|_| "default".to_owned())
}

/// Creates the bus unless it exists (`default` always does).
pub async fn ensure_bus(bus: &str) -> Result<(), String> {
    let client = local_eventbridge().await;
    if bus == "default" || client.describe_event_bus().name(bus).send().await.is_ok() {
        return Ok(());
    }
    client
        .create_event_bus()
        .name(bus)
        .send()
        .await
        .map(|_| ())
        .map_err(why)
}

/// Creates the queue `name` with `attributes` unless it exists with them; its URL and ARN.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<(String, String), String> {
    let mut request = sqs.create_queue().queue_name(name);
    for (key, value) in attributes {
        request = request.attributes(key, value);
    }
    let url = request
        .send()
        .await
        .map_err(why)?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(why)?
        .attributes()
        .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| format!("the queue {name} has no ARN"))?;
    Ok((url, arn))
}

/// A queue that receives the bus's events matching a pattern.
pub struct EventSink {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl EventSink {
    /// The sink `name` (queue and rule of that name, kept if they exist) for the stack's events that
    /// match `detail` (an EventBridge pattern on the event's detail, e.g. `{"thing_name": ["t1"]}`).
    pub async fn create(name: &str, detail: Value) -> Result<Self, String> {
        let bus = bus_name();
        ensure_bus(&bus).await?;
        let sqs = local_sqs().await;
        let (queue_url, arn) = create_queue(&sqs, name, Vec::new()).await?;
        let events = local_eventbridge().await;
        events
            .put_rule()
            .name(name)
            .event_bus_name(&bus)
            .event_pattern(json!({ "source": [SOURCE], "detail": detail }).to_string())
            .send()
            .await
            .map_err(why)?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id(name)
            .arn(arn)
            .build()
            .map_err(|err| err.to_string())?;
        events
            .put_targets()
            .rule(name)
            .event_bus_name(&bus)
            .targets(target)
            .send()
            .await
            .map_err(why)?;
        Ok(Self { sqs, queue_url })
    }

    /// The existing sink `name` (as [`Self::create`] made it).
    pub async fn open(name: &str) -> Result<Self, String> {
        let sqs = local_sqs().await;
        let out = sqs.get_queue_url().queue_name(name).send().await.map_err(why)?;
        let queue_url = out.queue_url().unwrap_or_default().to_owned();
        Ok(Self { sqs, queue_url })
    }

    /// The events that arrived since the last call (taken off the queue), in arrival order.
    pub async fn take(&self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let Ok(out) = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
            else {
                return events;
            };
            let messages = out.messages();
            if messages.is_empty() {
                return events;
            }
            for message in messages {
                if let Ok(event) = serde_json::from_str::<Value>(message.body().unwrap_or_default()) {
                    events.push(event);
                }
                if let Some(handle) = message.receipt_handle() {
                    let _ = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await;
                }
            }
        }
    }

    /// Collects events until `done` says the collection is complete or `within` passes; returns
    /// all collected.
    pub async fn collect_until(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = std::time::Instant::now();
        let mut events = Vec::new();
        loop {
            events.extend(self.take().await);
            if done(&events) || started.elapsed() >= within {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The `detail-type`s of `events`, in order.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| event["detail-type"].as_str().map(str::to_owned))
        .collect()
}
