//! Wiring only: the table, the vendor profiles and the transports are built once per execution
//! environment (so is the MQTT connection each vendor's messages go over); each invocation, from
//! the table's stream or the schedule, goes to `claim_publisher::handle`.

use claim_shared::{
    service::DeliverySettings,
    wiring::{background_timeouts, Wiring},
};
use lambda_runtime::{layers::TracingLayer, service_fn, Error, LambdaEvent, Runtime};
use metrics_cloudwatch_embedded::lambda::MetricsLayer;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    claim_shared::logging::init();
    let metrics = claim_shared::metrics::install()?;
    let wiring = Wiring::from_env_with(background_timeouts()).await;
    // The one publisher instance keeps its vendor leases between invocations, as it keeps its
    // MQTT connections: a delivery then starts without taking a lease and ends without giving it back.
    let delivery = wiring.delivery_with(DeliverySettings {
        keep_leases: true,
        ..DeliverySettings::default()
    })?;
    let claims = wiring.service()?.with_delivery(delivery);
    let handler = service_fn(|event: LambdaEvent<Value>| {
        let claims = &claims;
        async move { claim_publisher::handle(claims, &event.payload).await }
    });
    // As `lambda_runtime::run`, plus the metrics written after each invocation.
    Runtime::new(handler)
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(metrics))
        .run()
        .await
}
