//! Wiring only: the EventBridge sink is built once per execution environment; each batch of the
//! table's change stream goes to `lifecycle_events::handle`.

use claim_shared::{adapters::eventbridge::EventBridgeSink, wiring::Wiring};
use lambda_runtime::{layers::TracingLayer, service_fn, Error, LambdaEvent, Runtime};
use metrics_cloudwatch_embedded::lambda::MetricsLayer;
use serde_json::Value;

/// The events' `source` unless `EVENT_SOURCE` says otherwise.
const DEFAULT_SOURCE: &str = "expresslink.claims";

#[tokio::main]
async fn main() -> Result<(), Error> {
    claim_shared::logging::init();
    let metrics = claim_shared::metrics::install()?;
    let bus = claim_shared::config::required("EVENT_BUS_NAME")?;
    let source = std::env::var("EVENT_SOURCE").unwrap_or_else(|_| DEFAULT_SOURCE.to_owned());
    let wiring = Wiring::from_env().await;
    let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(wiring.aws()), bus, source);
    let handler = service_fn(|event: LambdaEvent<Value>| {
        let sink = &sink;
        async move { Ok::<Value, Error>(lifecycle_events::handle(sink, &event.payload).await) }
    });
    Runtime::new(handler)
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(metrics))
        .run()
        .await
}
