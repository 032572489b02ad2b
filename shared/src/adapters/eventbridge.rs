//! [`LifecycleSink`] over Amazon EventBridge (`PutEvents`): source and bus from the stack's
//! settings, the event's type as `detail-type`, the event as `detail`. At most 10 entries per call
//! (the API's limit); a call that fails fails its entries, an entry the bus refuses fails alone.
//! Every call has a deadline, retries (the SDK's standard ones) included.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::{error::DisplayErrorContext, primitives::DateTime, types::PutEventsRequestEntry, Client};

use crate::{
    domain::lifecycle::LifecycleEvent,
    ports::{LifecycleSink, SinkError},
};

/// Upper bound for one `PutEvents` call, retries included.
pub const PUT_TIMEOUT: Duration = Duration::from_secs(5);

/// `PutEvents` takes at most this many entries.
const ENTRIES_PER_CALL: usize = 10;

#[derive(Clone, Debug)]
pub struct EventBridgeSink {
    client: Client,
    bus: String,
    source: String,
}

impl EventBridgeSink {
    /// `bus`: the name or ARN of the event bus; `source`: the events' `source`.
    pub fn new(client: Client, bus: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
            source: source.into(),
        }
    }

    fn entry(&self, event: &LifecycleEvent) -> PutEventsRequestEntry {
        let at = DateTime::from_millis(i64::try_from(event.at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default());
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(&self.source)
            .detail_type(event.kind.as_str())
            .detail(event.detail())
            .time(at)
            .build()
    }

    async fn put_chunk(&self, events: &[LifecycleEvent]) -> Vec<Result<(), SinkError>> {
        let call = self
            .client
            .put_events()
            .set_entries(Some(events.iter().map(|event| self.entry(event)).collect()))
            .send();
        let output = match tokio::time::timeout(PUT_TIMEOUT, call).await {
            Ok(Ok(output)) => output,
            Ok(Err(err)) => return failed(events.len(), DisplayErrorContext(&err).to_string()),
            Err(_) => return failed(events.len(), format!("no answer within {} ms", PUT_TIMEOUT.as_millis())),
        };
        let results = output.entries();
        (0..events.len())
            .map(|index| match results.get(index) {
                Some(result) if result.error_code().is_none() => Ok(()),
                Some(result) => Err(SinkError(format!(
                    "{}: {}",
                    result.error_code().unwrap_or_default(),
                    result.error_message().unwrap_or_default()
                ))),
                None => Err(SinkError("no result for the entry".into())),
            })
            .collect()
    }
}

fn failed(n: usize, why: String) -> Vec<Result<(), SinkError>> {
    vec![Err(SinkError(why)); n]
}

#[async_trait]
impl LifecycleSink for EventBridgeSink {
    async fn put(&self, events: &[LifecycleEvent]) -> Vec<Result<(), SinkError>> {
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(ENTRIES_PER_CALL) {
            results.extend(self.put_chunk(chunk).await);
        }
        results
    }
}
