//! Wiring only: configuration and clients are built once per execution environment, then every
//! request goes to `Api::handle`.

use claim_api::{Api, ApiConfig};
use claim_shared::wiring::Wiring;
use lambda_http::{
    lambda_runtime::{layers::TracingLayer, Runtime},
    service_fn, Adapter, Error,
};
use metrics_cloudwatch_embedded::lambda::MetricsLayer;

#[tokio::main]
async fn main() -> Result<(), Error> {
    claim_shared::logging::init();
    let metrics = claim_shared::metrics::install()?;
    let config = ApiConfig::from_env()?;
    let wiring = Wiring::from_env().await;
    let service = wiring
        .service()?
        .with_label_code_key(wiring.label_code_key().await?)
        .with_delivery(wiring.delivery()?);
    // Claims and enabling lift quarantines (the certificate is activated again).
    let service = wiring.with_certificates(service)?;
    let api = Api::new(service, config);
    // As `lambda_http::run`, plus the metrics written after each invocation.
    Runtime::new(Adapter::from(service_fn(|request| api.handle(request))))
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(metrics))
        .run()
        .await
}
