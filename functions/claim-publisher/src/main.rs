//! Runs on a schedule (EventBridge, every minute on AWS; every few seconds in the local stack):
//! records the expiry of claims past their deadline (so lists and records are right even when
//! nobody reads them), then publishes every endpoint message the outbox owes: new claims whose
//! inline publish did not happen, and failed publishes whose backoff has passed. The event content
//! is ignored.

use std::time::Duration;

use claim_shared::wiring::Wiring;
use lambda_runtime::{layers::TracingLayer, service_fn, Error, LambdaEvent, Runtime};
use metrics_cloudwatch_embedded::lambda::MetricsLayer;
use serde_json::{json, Value};

/// Leaves headroom below the function's 60 s timeout (template.yaml); each publish is also cut
/// off at the budget.
const DRAIN_BUDGET: Duration = Duration::from_secs(45);

/// Overdue claims recorded per run; more wait for the next run (reads are right meanwhile).
const SWEEP_BATCH: u32 = 500;

#[tokio::main]
async fn main() -> Result<(), Error> {
    claim_shared::logging::init();
    let metrics = claim_shared::metrics::install()?;
    let wiring = Wiring::from_env().await;
    let claims = wiring.service()?.with_delivery(wiring.delivery()?);
    let handler = service_fn(|_event: LambdaEvent<Value>| {
        let claims = &claims;
        async move {
            // The two jobs are independent: a failing sweep must not stop deliveries. A storage
            // error fails the invocation (after both ran); the next scheduled run starts over.
            let expired = claims.sweep_overdue(SWEEP_BATCH).await;
            let report = claims.drain(DRAIN_BUDGET).await?;
            let expired = expired?;
            Ok::<Value, Error>(json!({
                "expired": expired,
                "published": report.published,
                "failed": report.failed,
                "busy_vendors": report.busy_vendors,
                "out_of_time": report.out_of_time,
            }))
        }
    });
    // As `lambda_runtime::run`, plus the metrics written after each invocation.
    Runtime::new(handler)
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(metrics))
        .run()
        .await
}
