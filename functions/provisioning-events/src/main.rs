//! Wiring only: the claim service is built once per execution environment; each topic-rule
//! invocation's payload goes, as raw bytes, to `provisioning_events::handle_invocation`: a topic
//! rule's event, or a batch of forwarded events from the SQS queue.

use claim_shared::{config::env_or, domain::forwarding::Forwarders, wiring::Wiring};
use lambda_runtime::{layers::TracingLayer, service_fn, Error, LambdaEvent, Runtime};
use metrics_cloudwatch_embedded::lambda::MetricsLayer;
use provisioning_events::raw::{RawPayload, RawPayloadLayer};

#[tokio::main]
async fn main() -> Result<(), Error> {
    claim_shared::logging::init();
    let metrics = claim_shared::metrics::install()?;
    let wiring = Wiring::from_env().await;
    let region = wiring.aws().region().map(ToString::to_string);
    // With the control plane: the rogue-device gate (QUARANTINE_ROGUE_DEVICES).
    let claims = wiring.with_certificates(wiring.service()?)?;
    if let Some(reason) = claims.gate_policy().off_because() {
        tracing::warn!(event = "quarantine_gate_off", reason);
    }
    // Who may forward events from other accounts (the stack's own account always may).
    let stack_account = std::env::var("STACK_ACCOUNT_ID").ok();
    let forwarders = Forwarders::parse(stack_account.as_deref(), &env_or("FORWARDING_ACCOUNT_IDS", ""))?;
    let handler = service_fn(|event: LambdaEvent<RawPayload>| {
        let (claims, region, forwarders) = (&claims, region.as_deref(), &forwarders);
        async move {
            // arn:aws:lambda:<region>:<account>:function:<name>: the OEM account the events come from.
            let account = event.context.invoked_function_arn.split(':').nth(4).map(str::to_owned);
            let payload = event.payload.as_bytes();
            provisioning_events::handle_invocation(claims, payload, region, account.as_deref(), forwarders)
                .await
                .map_err(Error::from)
        }
    });
    // As `lambda_runtime::run`, plus `RawPayloadLayer` (runs first on each invocation, after
    // tracing), and the metrics written after each invocation: any payload, even one that is not JSON, reaches the handler.
    Runtime::new(handler)
        .layer(RawPayloadLayer)
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(metrics))
        .run()
        .await
}
